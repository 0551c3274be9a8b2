"""Query -> ranked Hits: dense, keyword and hybrid (fused) retrieval, plus the answering sentence."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from indexer import keyword
from indexer.chunking import Passage
from indexer.embedding import TextModel
from indexer.store import LoadedIndex

MODES = ("hybrid", "dense", "keyword")
# How much a sentence's (idf-weighted) share of the query's keywords adds to its cosine when
# marking the answer: sentence vectors alone can miss exact facts such as "casualties".
HIGHLIGHT_KEYWORD_WEIGHT = 0.5


class QueryError(ValueError):
    """A query the user has to change: empty, too long, unknown mode, bad paging."""


@dataclass(frozen=True)
class Query:
    """One search request, already validated at the edge."""

    text: str
    k: int = 10
    offset: int = 0
    mode: str = "hybrid"
    group_by_doc: bool = False
    doc_ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class FusionParams:
    """How hybrid mode merges the dense and keyword lists, each read to `depth` hits.

    rrf: sum of weight / (rrf_k + rank); convex: sum of weight * score min-max scaled per list.
    """

    # Defaults tuned on SciFact train (convex 0.5/0.5 beat RRF there and on test): docs/benchmarks.md
    method: str = "convex"
    rrf_k: int = 60
    depth: int = 200
    dense_weight: float = 0.5
    keyword_weight: float = 0.5


@dataclass(frozen=True)
class ListRank:
    """Where one retriever placed a passage."""

    rank: int
    score: float


@dataclass(frozen=True)
class Highlight:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    passage: Passage
    highlight: Highlight
    dense: ListRank | None
    keyword: ListRank | None


def top_rows(scores: np.ndarray, depth: int, allowed: np.ndarray | None = None,
             positive_only: bool = False) -> list[tuple[int, float]]:
    """The depth best (row, score) pairs, best first, ties broken by row for stable paging."""
    candidates = np.arange(len(scores)) if allowed is None else np.flatnonzero(allowed)
    if positive_only:
        candidates = candidates[scores[candidates] > 0]
    if len(candidates) > depth:
        part = np.argpartition(-scores[candidates], depth - 1)[:depth]
        candidates = candidates[part]
    order = np.lexsort((candidates, -scores[candidates]))
    return [(int(candidates[i]), float(scores[candidates[i]])) for i in order]


def contributions(ranked: list[tuple[int, float]], params: FusionParams, weight: float) -> list[float]:
    """What each position of one ranked list adds to a fused score."""
    if params.method == "rrf":
        return [weight / (params.rrf_k + rank) for rank in range(1, len(ranked) + 1)]
    if params.method == "convex":
        scores = [score for _, score in ranked]
        low, high = min(scores, default=0.0), max(scores, default=0.0)
        return [weight * ((s - low) / (high - low) if high > low else 1.0) for s in scores]
    raise ValueError(f"unknown fusion method {params.method!r}; use rrf or convex")


def fuse(lists: list[tuple[list[tuple[int, float]], float]], params: FusionParams,
         key: Callable[[int], object] = lambda row: row) -> list[tuple[int, float]]:
    """Fuse (ranked list, weight) pairs into one list, best first, ties broken by row.

    Rows with the same key are one item (key = document when grouping); each item is shown by
    its best-ranked row.
    """
    fused: dict[object, float] = {}
    best: dict[object, tuple[int, int]] = {}
    for ranked, weight in lists:
        for rank, ((row, _), gain) in enumerate(zip(ranked, contributions(ranked, params, weight)), start=1):
            item = key(row)
            fused[item] = fused.get(item, 0.0) + gain
            if item not in best or (rank, row) < best[item]:
                best[item] = (rank, row)
    return sorted(((best[item][1], score) for item, score in fused.items()), key=lambda x: (-x[1], x[0]))


def first_per_doc(ranked: list[tuple[int, float]], passages: tuple[Passage, ...]) -> list[tuple[int, float]]:
    """Keep only the best passage of each document."""
    seen: set[str] = set()
    kept = []
    for row, score in ranked:
        if passages[row].doc_id not in seen:
            seen.add(passages[row].doc_id)
            kept.append((row, score))
    return kept


class Searcher:
    """A loaded index plus the model: answers Queries. Shared by the CLI, the API and eval."""

    def __init__(self, index: LoadedIndex, embedder: TextModel,
                 fusion: FusionParams = FusionParams()) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one query is tiny; threads only fight concurrent requests
        self.index = index
        self.contents = index.contents
        self.embedder = embedder
        self.fusion = fusion
        self.analyzer = keyword.Analyzer()
        self.embed_query = lru_cache(maxsize=1024)(embedder.embed_query)

    def search(self, query: Query) -> list[Hit]:
        """Ranked hits for one query, page [offset, offset + k)."""
        if not query.text.strip():
            raise QueryError("query is empty")
        if query.mode not in MODES:
            raise QueryError(f"unknown mode {query.mode!r}; use one of {', '.join(MODES)}")
        passages = self.contents.passages
        wanted = query.offset + query.k
        depth = max(self.fusion.depth, wanted * (4 if query.group_by_doc else 1))
        allowed = self.filter_mask(query)
        vector = self.embed_query(query.text)
        dense = self.dense_list(vector, depth, allowed) if query.mode != "keyword" else []
        terms = self.analyzer.terms(query.text)
        sparse = self.keyword_list(terms, depth, allowed) if query.mode != "dense" else []
        key = (lambda row: passages[row].doc_id) if query.group_by_doc else (lambda row: row)
        if query.group_by_doc:
            dense, sparse = first_per_doc(dense, passages), first_per_doc(sparse, passages)
        if query.mode == "dense":
            ranked = dense
        elif query.mode == "keyword":
            ranked = sparse
        else:
            ranked = fuse([(dense, self.fusion.dense_weight), (sparse, self.fusion.keyword_weight)],
                          self.fusion, key)
        dense_at = {key(row): ListRank(r, s) for r, (row, s) in enumerate(dense, start=1)}
        sparse_at = {key(row): ListRank(r, s) for r, (row, s) in enumerate(sparse, start=1)}
        weights = keyword.idf(self.contents.keyword_index, terms)
        return [Hit(rank=query.offset + i, score=score, passage=passages[row],
                    highlight=self.highlight(row, vector, weights),
                    dense=dense_at.get(key(row)), keyword=sparse_at.get(key(row)))
                for i, (row, score) in enumerate(ranked[query.offset:wanted], start=1)]

    def filter_mask(self, query: Query) -> np.ndarray | None:
        if not query.doc_ids and not query.sources:
            return None
        doc_ids, sources = set(query.doc_ids), set(query.sources)
        return np.array([(not doc_ids or p.doc_id in doc_ids) and (not sources or p.source in sources)
                         for p in self.contents.passages], dtype=bool)

    def dense_list(self, vector: np.ndarray, depth: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """Nearest passages by cosine, from the FAISS index."""
        import faiss

        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.flatnonzero(allowed).astype(np.int64)))
        depth = min(depth, self.index.faiss_index.ntotal)
        scores, rows = self.index.faiss_index.search(vector[None, :], depth, params=params)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def keyword_list(self, terms: list[str], depth: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """Best passages by BM25; passages sharing no term with the query are left out."""
        scores = keyword.scores(self.contents.keyword_index, terms)
        return top_rows(scores, depth, allowed, positive_only=True)

    def highlight(self, row: int, vector: np.ndarray, weights: dict[str, float]) -> Highlight:
        """The passage's sentence that best answers: closest in meaning, helped by shared rare keywords.

        weights: idf of each query term, so sharing "casualties" counts for more than "many".
        """
        contents = self.contents
        first, last = contents.sentence_bounds[row], contents.sentence_bounds[row + 1]
        passage = contents.passages[row]
        if last <= first:
            return Highlight(passage.start, passage.end, passage.text)
        spans = contents.sentence_spans[first:last]
        scores = contents.sentence_vectors[first:last] @ vector
        total = sum(weights.values())
        if total > 0 and last - first > 1:
            found = self.analyzer.matches(passage.text, {t for t, w in weights.items() if w > 0})
            if found:
                at = np.searchsorted(spans[:, 0], [passage.start + offset for offset, _ in found], side="right") - 1
                shared: dict[int, set[str]] = {}
                for sentence, (_, term) in zip(at.tolist(), found):
                    shared.setdefault(max(sentence, 0), set()).add(term)
                for sentence, terms in shared.items():
                    scores[sentence] += HIGHLIGHT_KEYWORD_WEIGHT * sum(weights[t] for t in terms) / total
        start, end = (int(x) for x in spans[int(np.argmax(scores))])
        return Highlight(start, end, passage.text[start - passage.start:end - passage.start])


def hit_record(hit: Hit, explain: bool = False) -> dict:
    """The JSON form of a hit, shared by the API and `semsearch search --json`."""
    p = hit.passage
    record = {"rank": hit.rank, "score": round(hit.score, 6), "text": p.text,
              "highlight": hit.highlight.text, "highlight_start": hit.highlight.start,
              "highlight_end": hit.highlight.end, "doc_id": p.doc_id, "title": p.title,
              "source": p.source, "section": p.section, "paragraph": p.paragraph,
              "start": p.start, "end": p.end, "passage_id": p.passage_id}
    if explain:
        record["explain"] = {name: None if at is None else {"rank": at.rank, "score": round(at.score, 6)}
                             for name, at in (("dense", hit.dense), ("keyword", hit.keyword))}
    return record
