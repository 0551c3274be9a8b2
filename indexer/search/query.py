"""A search request and its one validation (Query.check), used by every edge: the searcher runs it
first, the command line runs it before it searches here or asks a server, and the API's schema
states the same bounds for its spec. Light on purpose (no numpy), so `search --url` pays nothing
for it."""

from __future__ import annotations

from dataclasses import dataclass

from indexer.errors import COLLAPSE, FACETS, GROUPS, MODES, SORTS, QueryError
from indexer.text.metadata import Filters, time_bound


@dataclass(frozen=True)
class Query:
    """One search request; check() says what in it cannot be done."""

    text: str
    k: int = 10
    offset: int = 0
    mode: str = "hybrid"
    doc_ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    exact: bool = False  # dense list by exact search even where segments have an approximate index
    published_after: str | None = None  # ISO date or date-time, inclusive
    published_before: str | None = None  # exclusive; a date alone takes in that whole day
    outlets: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sort: str = "relevance"  # or "newest": the matches newest first
    recency_half_life_days: float | None = None  # scores times 0.5 ** (age in days / this)
    facets: tuple[str, ...] = ()  # of FACETS: document counts over the matches
    # The matches: hits whose relevance is at least this (None: Searcher.floor; 0 keeps all).
    min_relevance: float | None = None
    collapse: str | None = None  # "story": near-duplicates of other articles under the best one
    # Each article once (k counts articles): "article" shows its best passage with up to
    # MORE_PER_ARTICLE more of its matching passages in Hit.more; "document" ranks articles as the
    # evaluation does, each list cut to the article's best passage before the lists are combined.
    group: str | None = None
    more: bool = True  # group=article: with the article's further matching passages (a feed wants none)

    def check(self, most: int | None = None) -> None:
        """QueryError, naming the field (its .field), for the first thing asked that cannot be done.
        most: the largest page an edge serves (MAX_K for people; the evaluation reads deeper)."""
        chosen = {"mode": (self.mode, MODES), "sort": (self.sort, SORTS), "group": (self.group, GROUPS),
                  "collapse": (self.collapse, COLLAPSE)}
        if not self.text.strip():
            raise QueryError("query is empty", "q")
        if not 1 <= self.k <= (most or self.k):
            raise QueryError(f"k must be between 1 and {most}" if most else "k must be at least 1", "k")
        if self.offset < 0:
            raise QueryError("offset must be 0 or more", "offset")
        for name, (value, choices) in chosen.items():
            if value is not None and value not in choices:
                raise QueryError(f"unknown {name} {value!r}; use {' or '.join(choices)}", name)
        unknown = [name for name in self.facets if name not in FACETS]
        if unknown:
            raise QueryError(f"unknown facet {unknown[0]!r}; use any of {', '.join(FACETS)}", "facets")
        if self.recency_half_life_days is not None and not self.recency_half_life_days > 0:
            raise QueryError("recency_half_life_days must be more than 0", "recency_half_life_days")
        if self.min_relevance is not None and not 0 <= self.min_relevance <= 1:
            raise QueryError("min_relevance must be between 0 and 1", "min_relevance")
        self.filters()

    def filters(self) -> Filters:
        """What the query lets through; raises QueryError for a date bound that cannot be read."""
        bounds = {}
        for name, upper in (("published_after", False), ("published_before", True)):
            value = getattr(self, name)
            try:
                bounds[name] = None if value is None else time_bound(value, upper)
            except ValueError:
                raise QueryError(f"{name} must be an ISO 8601 date or date-time (2026-03-05 or "
                                 f"2026-03-05T14:00:00Z), not {value!r}", name) from None
        return Filters(doc_ids=self.doc_ids, sources=self.sources, outlets=self.outlets, authors=self.authors,
                       languages=self.languages, tags=self.tags, **bounds)
