"""Request and response models of the HTTP API (pydantic lives only at this edge)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from indexer.text.metadata import time_bound
from indexer.errors import FACETS, GROUPS, MAX_K, MOST_ENTRIES
from service.protocol import MAX_URL_BYTES

MAX_QUERY_CHARS = 1000
# Control characters (Unicode category Cc) other than tab, newline and carriage return.
CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# Whitespace as any regex dialect sees it (Unicode White_Space, ECMA-262's \s, Python's
# str.isspace), spelled out so the OpenAPI spec and the server draw the same line.
WHITESPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# Characters that carry no word: space, control and format characters, punctuation, symbols,
# arrows, box drawing, dingbats, variation selectors and emoji. Spelled as explicit ranges (the
# emoji as literal characters, since Python and ECMA-262 escape them differently) so that Python,
# Rust and ECMA-262 regexes, and so the spec and the server, draw the same line; \p{L} would not
# do: tools read it differently (schemathesis takes it for Latin letters).
NOT_WORD = (r"\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\xbf\xd7\xf7\u02b0-\u036f\u2000-\u2bff\u3000-\u303f"
            r"\ufe00-\ufe0f\ufe10-\ufe6f\ufeff\ufff0-\uffff" "\U0001f000-\U0001faff\U000e0000-\U000e01ef")
# What a query must be, published in the spec so clients and fuzzers know it: no control character
# and at least one character that can be part of a word (checked in SearchParams.valid_query).
QUERY_PATTERN = f"^[^{CONTROL}]*[^{NOT_WORD}][^{CONTROL}]*$"


# An ISO 8601 date or date-time, as the spec states it (so clients and fuzzers know what passes).
TimeBound = Annotated[str, WithJsonSchema({"type": "string", "maxLength": 40,
                                           "anyOf": [{"format": "date"}, {"format": "date-time"}]})]
Names = list[Annotated[str, Field(min_length=1, max_length=200)]]
FACETS_PATTERN = f"^({'|'.join(FACETS)})(,({'|'.join(FACETS)}))*$"


class SearchParams(BaseModel):
    """A search: the same fields as GET query parameters or a POST JSON body."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="the question, in plain words "
                   "(at least one letter or digit, no control characters)",
                   examples=["why won't Russia stop"], json_schema_extra={"pattern": QUERY_PATTERN})
    k: int = Field(10, ge=1, le=MAX_K, description="results per page")
    offset: int = Field(0, ge=0, le=1000, description="results to skip, for paging")
    mode: Literal["hybrid", "dense", "keyword"] = Field("hybrid", description="retrieval mode")
    group: Literal[GROUPS] | None = Field(None, description="each article once (k counts articles). article: "
                                          "ranked by its best passage, with up to two more of its matching passages "
                                          "in `more`; document: ranked as the evaluation ranks documents, each list "
                                          "cut to the article's best passage before the lists are combined")
    group_by_doc: bool = Field(False, description="the older name of group=document (used when group is not given)",
                               json_schema_extra={"deprecated": True})
    explain: bool = Field(False, description="add each retriever's rank and score, and the evidence behind "
                          "the relevance")
    min_relevance: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                        description="leave out hits below this relevance (default: the weak "
                                        "grade's floor; 0 keeps every hit)")
    exact: bool = Field(False, description="dense list by exact search, never the approximate index "
                                           "(slower on large indexes; for measuring its recall)")
    doc_id: list[str] = Field(default_factory=list, description="only these articles")
    source: list[str] = Field(default_factory=list, description="only these sources")
    published_after: TimeBound | None = Field(None, max_length=40, description="only articles published at or "
                                              "after this (ISO date or date-time; no zone: UTC)", strict=False)
    published_before: TimeBound | None = Field(None, max_length=40, description="only articles published before "
                                               "this; a date alone takes in that whole day", strict=False)
    outlet: Names = Field(default_factory=list, description="only these outlets (any case)")
    author: Names = Field(default_factory=list, description="only articles by one of these authors (any case)")
    language: Names = Field(default_factory=list, description="only these languages (en also matches en-GB)")
    tag: Names = Field(default_factory=list, description="only articles with one of these tags (any case)")
    sort: Literal["relevance", "newest"] = Field("relevance", description="newest: the matches (hits at or "
                                                 "above min_relevance) newest first, undated last")
    recency_half_life_days: float | None = Field(None, gt=0, le=36_500, allow_inf_nan=False,
                                                 description="boost recent articles: scores times 0.5 ** (age "
                                                 "in days / this); off when absent")

    collapse: Literal["story"] | None = Field(None, description="story: near-identical passages of other articles "
                                              "(syndicated copies) shown once, under the best, with the others in "
                                              "also_in")
    facets: str | None = Field(None, max_length=200, pattern=FACETS_PATTERN,
                               description="comma-separated, any of outlet, month, section, author, tag, language: "
                               "document counts per value over all matches (hits at or above min_relevance), not only "
                               "the page")

    @field_validator("published_after", "published_before")
    @classmethod
    def valid_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                time_bound(value, upper=False)
            except ValueError:
                raise ValueError("must be an ISO 8601 date or date-time, e.g. 2026-03-05 or 2026-03-05T14:00:00Z") from None
        return value

    @field_validator("q")
    @classmethod
    def valid_query(cls, value: str) -> str:
        """QUERY_PATTERN, with a message saying which part failed."""
        if not value.strip():
            raise ValueError("query must not be empty")
        if re.search(f"[{CONTROL}]", value):
            raise ValueError("query must not contain control characters")
        if not re.search(f"[^{NOT_WORD}]", value):  # only emoji, punctuation, invisible
            raise ValueError("query has no words to search for (letters or digits)")
        return value.strip()

    def grouping(self) -> str | None:
        """group, else group=document when the older group_by_doc asks for it."""
        return self.group or ("document" if self.group_by_doc else None)


class FeedParams(SearchParams):
    """GET /search.atom: the parameters of GET /search; the feed is its own order (newest first,
    each article once), so sort, group, offset, facets, explain and the recency boost are not used."""

    k: int = Field(MOST_ENTRIES, ge=1, le=MOST_ENTRIES, description="the most entries (articles) the feed lists")


class SearchBody(SearchParams):
    """POST /search: JSON types as the spec states them (10, not "10"; false, not 0)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("k", "offset", mode="before")
    @classmethod
    def whole_number(cls, value: object) -> object:
        return int(value) if isinstance(value, float) and value.is_integer() else value  # JSON's 10.0 is 10


class ListRankOut(BaseModel):
    rank: int
    score: float


class AlsoIn(BaseModel):
    doc_id: str
    outlet: str | None
    source: str


class ExplainOut(BaseModel):
    dense: ListRankOut | None = Field(description="the passage's place in the dense list (None: not reached)")
    keyword: ListRankOut | None = Field(description="its place in the keyword list (None: not reached)")
    cosine: float = Field(description="dense similarity to the query (a bound when the dense list did not reach it)")
    keyword_share: float = Field(description="the share of the query's keyword weight the passage holds")
    late: float | None = Field(description="its late-interaction score (None: not graded again, below the "
                                           "first SEMSEARCH_LATE_DEPTH passages or an index without word pieces)")
    query_kind: Literal["question", "statement"] = Field(
        description="the query's kind, whose late-stage weights graded it: a question (or a few keywords) or a "
                    "statement")


class ResultOut(BaseModel):
    rank: int
    score: float = Field(description="the ranking score (fused; comparable only within one query)")
    relevance: float = Field(description="how well the passage answers, the same scale for every query (0 to 1)")
    match: Literal["strong", "weak", "none"] = Field(description="the relevance's grade")
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
    published_at: str | None = Field(None, description="when the article was published (ISO 8601, UTC)")
    updated_at: str | None = Field(None, description="when it was last updated (ISO 8601, UTC)")
    authors: list[str] = Field(default_factory=list)
    outlet: str | None = Field(None, description="the site or publication")
    language: str | None = None
    tags: list[str] = Field(default_factory=list, description="tags, keywords and the outlet's section")
    also_in: list[AlsoIn] | None = Field(None, description="with collapse=story: the story's other articles")
    more: list[ResultOut] | None = Field(None, description="with group=article: the article's further matching "
                                         "passages, in the same shape")
    explain: ExplainOut | None = None


class FacetValue(BaseModel):
    value: str
    count: int = Field(description="matching documents with this value")


class SearchResponse(BaseModel):
    query: str
    took_ms: float
    results: list[ResultOut]
    no_good_match: bool = Field(description="nothing reached min_relevance: the index holds no good answer")
    facets: dict[str, list[FacetValue]] | None = Field(None, description="only when facets were asked for")


class KeptPassage(BaseModel):
    passage_id: str
    text: str
    section: str
    paragraph: int
    start: int = Field(description="offset of the passage in the document's text")
    end: int


class DocumentOut(BaseModel):
    doc_id: str
    title: str
    source: str
    origin: Literal["folder", "api"] = Field(description="folder: from `semsearch index FOLDER`; api: POST /documents")
    text: str = Field(description="the text as kept (for a web page: the article found in it)")
    published_at: str | None = None
    updated_at: str | None = None
    authors: list[str] = Field(default_factory=list)
    outlet: str | None = None
    language: str | None = None
    tags: list[str] = Field(default_factory=list)
    passages: list[KeptPassage] = Field(description="the passages search can return, in text order")


class DocumentSummary(BaseModel):
    doc_id: str
    title: str
    source: str
    origin: Literal["folder", "api"]


class DocumentList(BaseModel):
    total: int = Field(description="documents in the index")
    offset: int
    documents: list[DocumentSummary] = Field(description="a page of them, in doc_id order")


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    fix: str | None = None
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# For operations with a body: it is refused before it is parsed when over the limit.
TOO_LARGE = {413: {"model": ErrorResponse, "description": "the body is over SEMSEARCH_MAX_BODY_BYTES"}}
# For GET /search: a URL over the server's limit is refused before its parameters are read.
URL_TOO_LONG = {414: {"model": ErrorResponse, "description": f"the URL is over {MAX_URL_BYTES:,} bytes: send the "
                      "search as POST /search with a JSON body"}}
