"""Request and response models of the HTTP API (pydantic lives only at this edge)."""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_QUERY_CHARS = 1000
MAX_K = 50


class SearchParams(BaseModel):
    """A search: the same fields as GET query parameters or a POST JSON body."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="the question, in plain words",
                   examples=["why won't Russia stop"])
    k: int = Field(10, ge=1, le=MAX_K, description="results per page")
    offset: int = Field(0, ge=0, le=1000, description="results to skip, for paging")
    mode: Literal["hybrid", "dense", "keyword"] = Field("hybrid", description="retrieval mode")
    group_by_doc: bool = Field(False, description="at most one passage per article")
    explain: bool = Field(False, description="add each retriever's rank and score")
    exact: bool = Field(False, description="dense list by exact search, never the approximate index "
                                           "(slower on large indexes; for measuring its recall)")
    doc_id: list[str] = Field(default_factory=list, description="only these articles")
    source: list[str] = Field(default_factory=list, description="only these sources")

    @field_validator("q")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must not be empty")
        if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
            raise ValueError("query must not contain control characters")
        if not any(c.isalnum() for c in value):  # only emoji, punctuation or invisible characters
            raise ValueError("query has no words to search for (letters or digits)")
        return value.strip()


class ListRankOut(BaseModel):
    rank: int
    score: float


class ResultOut(BaseModel):
    rank: int
    score: float
    text: str
    highlight: str = Field(description="the sentence of the passage that best answers the query")
    highlight_start: int
    highlight_end: int
    doc_id: str
    title: str
    source: str
    section: str
    paragraph: int
    start: int = Field(description="offset of the passage in the document text")
    end: int
    passage_id: str
    explain: dict[str, ListRankOut | None] | None = None


class SearchResponse(BaseModel):
    query: str
    took_ms: float
    results: list[ResultOut]


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    fix: str | None = None
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
