"""The service's one typed configuration, read from SEMSEARCH_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.engines import ENGINE_NAMES
from indexer.feeds.fetcher import DEFAULT_MAX_DOCUMENT_CHARS
from indexer.model.onnx_encoder import PRECISIONS
from indexer.search.searcher import FusionParams


class Settings(BaseSettings):
    """Everything the service can be told; every field is SEMSEARCH_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="SEMSEARCH_", extra="ignore")

    index_dir: Path = Field(Path("index"), description="index folder written by `semsearch index`")
    model_path: str | None = Field(None, description="sentence-transformers model folder; default: the packaged all-MiniLM-L6-v2")
    fusion_method: Literal["relevance", "rrf", "convex"] = Field("relevance", description="how hybrid mode orders what the two lists found: by the relevance shown (one score), or by fusing their ranks (rrf) or scaled scores (convex)")
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    fusion_depth: int = Field(200, ge=1, description="how deep each list is read before fusing")
    dense_weight: float = Field(0.5, ge=0, description="weight of the dense list in hybrid mode")
    keyword_weight: float = Field(0.5, ge=0, description="weight of the keyword list in hybrid mode")
    reload_interval: float = Field(1.0, ge=0, description="seconds between checks for a new index generation; 0: never")
    api_key: SecretStr | None = Field(None, description="Bearer key for /documents and /admin; unset: those are disabled")
    model_threads: int = Field(0, ge=0, description="CPU threads per embedding call; 0: the runtime's default")
    model_spin: bool = Field(True, description="let idle ONNX threads busy-wait (faster alone, slower under load)")
    backend: Literal["onnx", "torch"] = Field("onnx", description="model runtime; onnx gives the same vectors, faster")
    precision: Literal[PRECISIONS] | None = Field(
        None, description="model arithmetic; unset: the index's own (int8-static for a new index); see the README")
    ann_min_rows: int = Field(50_000, ge=1, description="segments with at least this many passages get an "
                                                        "approximate index when ingest or a merge writes them")
    merge: bool = Field(True, description="merge small segments in the background after ingests")
    engine: Literal[ENGINE_NAMES] | None = Field(None, description="index engine for a new index; unset: the "
                                                      "index's own (engine.json), else faiss")
    milvus_uri: str | None = Field(None, description="Milvus Lite file (.db) or http(s)://host:port; unset: "
                                   "milvus.db in the index folder")
    milvus_token: SecretStr | None = Field(None, description="Milvus token (user:password or an API key)")
    threaded_search_passages: int = Field(200_000, ge=0, description="indexes with at least this many passages "
                                          "search in the thread pool (two searches share the cores)")
    max_body_bytes: int = Field(4_000_000, ge=1024, description="largest request body; larger ones get 413 "
                                "before anything is read or parsed")
    max_filter_values: int = Field(1000, ge=1, description="most doc_id or source values in one search")
    max_document_chars: int = Field(DEFAULT_MAX_DOCUMENT_CHARS, ge=1, description="longest document text "
                                    "accepted by POST /documents or from a followed feed")
    max_documents_per_call: int = Field(100, ge=1, description="most documents in one POST /documents")
    max_concurrent_requests: int = Field(64, ge=1, description="requests answered at once; more get 503 with "
                                         "Retry-After (the health probes never do)")
    body_timeout: float = Field(10.0, gt=0, description="seconds a request body may stop arriving before 408")
    feeds: str = Field("", description="comma-separated feed URLs (RSS, Atom, JSON Feed) the service polls in the "
                       "background and indexes, as `semsearch follow` does; empty: none")
    feed_interval: float = Field(600.0, ge=1, description="seconds between two polls of SEMSEARCH_FEEDS")

    @property
    def feed_urls(self) -> list[str]:
        return [url.strip() for url in self.feeds.split(",") if url.strip()]

    @property
    def ingest_enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())

    def engine_options(self) -> dict:
        """What open_engine is given besides the folder and the model."""
        return {"ann_min_rows": self.ann_min_rows, "uri": self.milvus_uri,
                "token": self.milvus_token.get_secret_value() if self.milvus_token else None}

    def fusion(self) -> FusionParams:
        return FusionParams(method=self.fusion_method, rrf_k=self.rrf_k, depth=self.fusion_depth,
                            dense_weight=self.dense_weight, keyword_weight=self.keyword_weight)
