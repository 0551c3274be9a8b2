"""The service's one typed configuration, read from SEMSEARCH_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be told; every field is SEMSEARCH_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="SEMSEARCH_", extra="ignore")

    index_dir: Path = Field(Path("index"), description="index folder written by `semsearch index`")
    model_path: str | None = Field(None, description="sentence-transformers model folder; default: the packaged all-MiniLM-L6-v2")
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    fusion_depth: int = Field(100, ge=1, description="how deep each list is read before fusing")
