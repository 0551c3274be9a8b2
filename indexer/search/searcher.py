"""Query -> ranked Hits: dense, keyword and hybrid (fused) retrieval, plus the answering sentence."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np

from indexer.text import keyword, neardup
from indexer.text.chunking import Passage
from indexer.model import pieces
from indexer.model.embedding import TextModel
from indexer.index.engine import IndexReader, Selection, StoredPassage
from indexer.errors import MORE_PER_ARTICLE
from indexer.settings import Settings
from indexer.search.query import Query  # noqa: F401 (importers name it here)
from indexer.text.metadata import NO_DATE, Metadata
from indexer.search.relevance import RelevanceParams, below, kind_of, relevance_for

FACET_VALUES = 20  # the most frequent values each facet lists
# From this many passages, hybrid mode computes its two lists at once (on a small index the
# thread hand-off costs more than the overlap saves).
PARALLEL_LISTS_FROM = 200_000
# How much a sentence's (idf-weighted) share of the query's keywords adds to its cosine when
# marking the answer: sentence vectors alone can miss exact facts such as "casualties".
HIGHLIGHT_KEYWORD_WEIGHT = 0.5
# What a query's word piece without a keyword term (a stopword, punctuation) weighs in late
# interaction, where the others weigh their word's idf: chosen on the news questions' fit half
# among 0, 0.5, 1, 1.5, 2 and 3 (docs/benchmarks.md, late interaction).
STOPWORD_PIECE_WEIGHT = 1.0


@dataclass(frozen=True)
class FusionParams:
    """How hybrid mode orders the passages the dense and keyword lists found, each read to `depth`.

    relevance (the default): by the relevance each is shown with (indexer/search/relevance.py), so order and
    grade never disagree; rrf: sum of weight / (rrf_k + rank); convex: sum of weight * score
    min-max scaled per list (the weights are rrf's and convex's only).
    """

    # relevance put the right paragraph first more often than convex on every question set and held
    # SciFact (docs/benchmarks.md, "One score"); convex 0.5/0.5 was tuned on SciFact train.
    method: str = Settings.fusion_method
    rrf_k: int = Settings.rrf_k
    depth: int = Settings.fusion_depth
    dense_weight: float = Settings.dense_weight
    keyword_weight: float = Settings.keyword_weight
    # Passages graded again with late interaction: every answer of the news questions' fit half is
    # within the first 30 by the first relevance (docs/benchmarks.md, late interaction).
    late_depth: int = Settings.late_depth

    @classmethod
    def of(cls, settings: Settings) -> "FusionParams":
        return cls(method=settings.fusion_method, rrf_k=settings.rrf_k, depth=settings.fusion_depth,
                   dense_weight=settings.dense_weight, keyword_weight=settings.keyword_weight,
                   late_depth=settings.late_depth)


@dataclass(frozen=True)
class ListRank:
    """Where one retriever placed a passage."""

    rank: int
    score: float


@dataclass(frozen=True)
class Answer:
    hits: list
    facets: dict[str, list[dict]] | None  # None: none asked for
    no_good_match: bool = False  # nothing reached min_relevance (or the filters left nothing)


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
    metadata: Metadata = Metadata()
    also_in: tuple[dict, ...] | None = None  # with collapse=story: the story's other articles
    more: tuple[Hit, ...] | None = None  # with group=article: the article's further matching passages
    relevance: float = 0.0  # RelevanceParams: the same scale for every query
    match: str = "none"  # "strong", "weak" or "none"
    # (cosine, keyword share, late interaction: NaN when not graded again) behind the relevance
    evidence: tuple[float, float, float] = (0.0, 0.0, math.nan)


@dataclass(frozen=True)
class Found:
    """What retrieval found for a query (Searcher.retrieve): the candidates in the mode's order,
    and what the later stages need of the two lists."""

    vector: np.ndarray                         # the query's
    weights: dict[str, float]                  # idf of each query term
    key: Callable[[int], object]               # passage id -> ranked item (its document with group=document)
    dense_at: dict                             # item -> (rank, cosine) in the dense list
    sparse_at: dict                            # item -> (rank, BM25) in the keyword list
    ranked: list[tuple[int, float]]            # (passage id, score), best first
    graded: dict[int, tuple[float, float, float, float]]  # passage id -> (relevance, cosine, keyword share, late)


@dataclass(frozen=True)
class Arranged:
    """The matches as shown (Searcher.arrange): stories collapsed, articles grouped."""

    ranked: list[tuple[int, float]]
    more: dict[int, list[tuple[int, float]]]   # with group=article: each lead's further passages
    copies: dict[int, list[int]] | None        # with collapse=story: each shown passage's other copies


def contributions(ranked: list[tuple[int, float]], params: FusionParams, weight: float) -> list[float]:
    """What each position of one ranked list adds to a fused score."""
    if params.method == "rrf":
        return [weight / (params.rrf_k + rank) for rank in range(1, len(ranked) + 1)]
    if params.method == "convex":
        scores = [score for _, score in ranked]
        low, high = min(scores, default=0.0), max(scores, default=0.0)
        return [weight * ((s - low) / (high - low) if high > low else 1.0) for s in scores]
    raise ValueError(f"unknown fusion method {params.method!r}; use relevance, rrf or convex")


def fuse(lists: list[tuple[list[tuple[int, float]], float]], params: FusionParams,
         key: Callable[[int], object] | None = None) -> list[tuple[int, float]]:
    """Fuse (ranked list, weight) pairs of passage ids into one list, best first, ties broken by id.

    Ids with the same key are one item (key = document when grouping); each item is shown by
    its best-ranked passage. Without a key, each id is an item, summed by numpy (the same
    additions in the same order, so the same scores; a third of a millisecond less per search).
    """
    if key is None:
        parts = [(ranked, weight) for ranked, weight in lists if ranked]
        if not parts:
            return []
        ids = np.concatenate([np.fromiter((row for row, _ in ranked), np.int64, len(ranked)) for ranked, _ in parts])
        gains = np.concatenate([np.asarray(contributions(ranked, params, weight)) for ranked, weight in parts])
        items, at = np.unique(ids, return_inverse=True)
        totals = np.bincount(at, weights=gains)
        order = np.lexsort((items, -totals))
        return list(zip(items[order].tolist(), totals[order].tolist()))
    fused: dict[object, float] = {}
    best: dict[object, tuple[int, int]] = {}
    for ranked, weight in lists:
        for rank, ((row, _), gain) in enumerate(zip(ranked, contributions(ranked, params, weight)), start=1):
            item = key(row)
            fused[item] = fused.get(item, 0.0) + gain
            if item not in best or (rank, row) < best[item]:
                best[item] = (rank, row)
    return sorted(((best[item][1], score) for item, score in fused.items()), key=lambda x: (-x[1], x[0]))


def list_rank(found: tuple[int, float] | None) -> ListRank | None:
    return None if found is None else ListRank(*found)


def first_per_doc(ranked: list[tuple[int, float]], documents: dict[int, int]) -> list[tuple[int, float]]:
    """Keep only the best passage of each document (documents: passage id -> document number)."""
    seen: set[int] = set()
    kept = []
    for passage_id, score in ranked:
        if documents[passage_id] not in seen:
            seen.add(documents[passage_id])
            kept.append((passage_id, score))
    return kept


def single_threaded_numpy() -> None:
    """Query-sized numpy products on one thread: numpy's OpenBLAS threads keep spinning after each
    call and then starve FAISS and ONNX Runtime on a 2-core machine (an IVF search went from 0.2
    to 4 ms after one numpy product; bench/ann.py). FAISS's own BLAS, used by builds, keeps its threads."""
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(prefix="libscipy_openblas").limit(limits=1)


class Searcher:
    """An index snapshot plus the model: answers Queries. Shared by the CLI, the API and eval.

    The index is any IndexReader (indexer/index/engine.py): this module names no engine.
    """

    def __init__(self, index: IndexReader, embedder: TextModel, fusion: FusionParams = FusionParams(),
                 relevance: RelevanceParams | None = None) -> None:
        """relevance: its weights (None: the shipped ones for the embedder's model, indexer/search/relevance.py)."""
        single_threaded_numpy()
        self.index = index
        self.embedder = embedder
        self.fusion = fusion
        self.relevance = relevance if relevance is not None else relevance_for(embedder.name)[0]
        self.floor = self.relevance.floor  # the weak grade's when fitted for the model, else none
        self.analyzer = keyword.Analyzer()
        self.embed_query_pieces = lru_cache(maxsize=1024)(embedder.embed_query_pieces)
        self.lists_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dense-list")
        self.searching = 0  # searches computing their lists now, in any thread
        self.searching_lock = threading.Lock()

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector (cached with its word pieces)."""
        return self.embed_query_pieces(text)[0]

    def piece_weights(self, text: str, spans: np.ndarray, known: dict[str, float] | None = None) -> np.ndarray | None:
        """How much each of the query's word pieces counts in late interaction: the idf (in this
        index) of its word's keyword terms, STOPWORD_PIECE_WEIGHT for a piece of a word without one;
        None (all the same) when the model gives no spans. known: idf already read for some terms
        (the keyword list's), so only the others are looked up."""
        if not len(spans):
            return None
        terms = self.analyzer.piece_terms(text, [(int(a), int(b)) for a, b in spans])
        known = known or {}
        wanted = sorted({t for found in terms for t in found} - known.keys())
        idf = {**known, **(self.index.term_weights(wanted) if wanted else {})}
        unseen = math.log1p((self.index.info.passages + 0.5) / 0.5)  # as keyword_total counts a term found nowhere
        return np.array([sum(idf.get(t) or unseen for t in found) if found else STOPWORD_PIECE_WEIGHT
                         for found in terms])

    @contextmanager
    def running(self) -> Iterator[int]:
        """Count this search as running while inside; gives how many others are running."""
        with self.searching_lock:
            others = self.searching
            self.searching += 1
        try:
            yield others
        finally:
            with self.searching_lock:
                self.searching -= 1

    def search(self, query: Query) -> list[Hit]:
        """Ranked hits for one query, page [offset, offset + k)."""
        return self.answer(query).hits

    def answer(self, query: Query) -> Answer:
        """The page of hits and, when the query asks, facet counts over all its matches: the
        stages in order (each a method below)."""
        query.check()
        nothing = Answer([], {name: [] for name in query.facets} if query.facets else None, no_good_match=True)
        selection = self.selection(query)
        if selection is not None and not selection.size:
            return nothing  # the filters leave nothing to search
        found = self.retrieve(query, selection)
        matches = self.matches(query, found)
        facets = self.facet_counts(matches, query.facets) if query.facets else None
        shown = self.arrange(query, matches, found)
        page = shown.ranked[query.offset:query.offset + query.k]
        if not page:
            return Answer([], facets or nothing.facets, no_good_match=not shown.ranked)
        return Answer(self.present(query, page, shown, found), facets)

    def selection(self, query: Query) -> Selection | None:
        """Stage 1: the passages the query's filters allow (None: no filter)."""
        filters = query.filters()
        return self.index.select(filters) if filters else None

    def retrieve(self, query: Query, selection: Selection | None) -> Found:
        """Stage 2: both lists (whatever the mode: the mode decides the order, both give the
        relevance), the candidates in the mode's order and each one's relevance and evidence."""
        depth = max(self.fusion.depth, (query.offset + query.k) * (4 if query.group else 1))
        vector = self.embed_query(query.text)
        terms = self.analyzer.query_terms(query.text)
        described = bool(query.group or query.collapse or query.facets or query.sort == "newest"
                         or query.recency_half_life_days is not None)  # stages that ask about every match
        dense, sparse = self.lists(vector, terms, depth, selection, query.exact, described)
        key: Callable[[int], object] = lambda passage_id: passage_id
        by_document = query.group == "document"
        if by_document:
            documents = self.index.documents_of([i for i, _ in dense] + [i for i, _ in sparse])
            key = documents.__getitem__
            dense, sparse = first_per_doc(dense, documents), first_per_doc(sparse, documents)
        if query.mode == "dense":
            ranked = dense
        elif query.mode == "keyword":
            ranked = sparse
        else:  # every passage either list found (relevance orders them below)
            union = self.fusion if self.fusion.method != "relevance" else replace(self.fusion, method="convex")
            ranked = fuse([(dense, self.fusion.dense_weight), (sparse, self.fusion.keyword_weight)],
                          union, key if by_document else None)
        dense_at = {key(i): (r, s) for r, (i, s) in enumerate(dense, start=1)}
        sparse_at = {key(i): (r, s) for r, (i, s) in enumerate(sparse, start=1)}
        weights = self.index.term_weights(terms) if terms else {}
        cosines, shares = self.evidence([key(i) for i, _ in ranked], dense, sparse, dense_at, sparse_at,
                                        self.keyword_total(terms, weights), depth)
        graded = {i: (r, c, k, math.nan) for (i, _), r, c, k in
                  zip(ranked, self.relevance_of(cosines, shares).tolist(), cosines.tolist(), shares.tolist())}
        if self.relevance.late and self.fusion.late_depth and graded:
            _, query_pieces, spans = self.embed_query_pieces(query.text)
            graded = self.rescored(graded, query_pieces, self.piece_weights(query.text, spans, weights),
                                   kind_of(query.text))
        if query.mode == "hybrid" and self.fusion.method == "relevance":  # one score: the order is the grade's
            ranked = sorted(((i, graded[i][0]) for i, _ in ranked), key=lambda h: (-h[1], h[0]))
        return Found(vector, weights, key, dense_at, sparse_at, ranked, graded)

    def matches(self, query: Query, found: Found) -> list[tuple[int, float]]:
        """Stage 3: the candidates at or above the query's relevance floor, in the order asked
        (relevance, or with a recency boost, or newest first)."""
        floor = self.floor if query.min_relevance is None else query.min_relevance
        ranked = [(i, s) for i, s in found.ranked if found.graded[i][0] >= floor]
        if query.recency_half_life_days is not None or query.sort == "newest":
            ranked = self.by_time(ranked, query)
        return ranked

    def arrange(self, query: Query, matches: list[tuple[int, float]], found: Found) -> Arranged:
        """Stage 4: near-duplicate stories under their first copy (collapse=story), then each
        article once with its further passages (group=article)."""
        copies: dict[int, list[int]] | None = None
        if query.collapse is not None:
            ids = [i for i, _ in matches]
            copies = neardup.stories(ids, self.index.signatures(ids), self.index.documents_of(ids))
            matches = [(i, s) for i, s in matches if i in copies]
        more: dict[int, list[tuple[int, float]]] = {}
        if query.group == "article":
            matches, more = self.by_article(matches, {i: found.graded[i][0] for i, _ in matches})
            more = more if query.more else {i: [] for i in more}
        return Arranged(matches, more, copies)

    def present(self, query: Query, page: list[tuple[int, float]], shown: Arranged, found: Found) -> list[Hit]:
        """Stage 5: the page's hits, with their texts, sentences and marked answers (fetched for
        the page only)."""
        more, copies = shown.more, shown.copies
        stored = self.index.fetch([j for i, _ in page for j in [i, *(m for m, _ in more.get(i, ()))]])
        others = self.index.fetch([c for i, _ in page for c in copies[i]]) if copies else {}
        also_in = {i: tuple({"doc_id": others[c].passage.doc_id, "outlet": others[c].metadata.outlet,
                             "source": others[c].passage.source} for c in copies[i]) for i, _ in page} if copies else {}
        scores = dict(shown.ranked) | {j: s for i, _ in page for j, s in more.get(i, ())}

        def hit(rank: int, i: int, grouped: tuple[Hit, ...] | None = None) -> Hit:
            relevance, *evidence = found.graded[i]
            return Hit(rank=rank, score=scores[i], passage=stored[i].passage,
                       highlight=self.highlight(stored[i], found.vector, found.weights),
                       dense=list_rank(found.dense_at.get(found.key(i))),
                       keyword=list_rank(found.sparse_at.get(found.key(i))), metadata=stored[i].metadata,
                       also_in=also_in.get(i, () if copies is not None else None), more=grouped,
                       relevance=relevance, match=self.grade(relevance), evidence=tuple(evidence))

        return [hit(query.offset + n, i, tuple(hit(query.offset + n, j) for j, _ in more[i])
                    if query.group == "article" else None)
                for n, (i, _) in enumerate(page, start=1)]

    def lists(self, vector: np.ndarray, terms: list[str], depth: int, selection, exact: bool,
              described: bool = False) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The dense and the keyword list, each `depth` deep (described: later stages will ask
        about the passages found, see IndexReader.dense)."""
        with self.running() as others:
            if not others and self.index.info.passages >= PARALLEL_LISTS_FROM:
                # A large index and no other search running: the dense list (FAISS, which releases
                # the GIL) on the other core while this thread scores keywords. With other searches
                # running the cores are busy anyway, and the hand-off only adds thread switches.
                pending = self.lists_pool.submit(self.index.dense, vector, depth, selection, exact, described)
                sparse = self.index.keyword(terms, depth, selection, described)
                return pending.result(), sparse
            return (self.index.dense(vector, depth, selection, exact, described),
                    self.index.keyword(terms, depth, selection, described))

    def keyword_total(self, terms: list[str], weights: dict[str, float]) -> float:
        """The most BM25 score a passage could reach for these terms, as a sum of idf (each
        repeat again, as BM25 counts it; a term found nowhere at the highest idf there is)."""
        unseen = math.log1p((self.index.info.passages + 0.5) / 0.5)  # Lucene's idf at df 0
        return sum(weights.get(t) or unseen for t in terms)

    @staticmethod
    def evidence(items: list, dense: list, sparse: list, dense_at: dict, sparse_at: dict, keyword_total: float,
                 depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Each item's dense cosine and keyword share. An item a list did not reach scores at
        most that list's last score: the bound stands in (0 for the keyword list when it was not
        full, since then every passage sharing a term is in it)."""
        last_cosine = dense[-1][1] if dense else 0.0
        last_keyword = sparse[-1][1] if len(sparse) >= depth else 0.0
        cosines = np.fromiter((dense_at[i][1] if i in dense_at else last_cosine for i in items), np.float64, len(items))
        keyword = np.fromiter((sparse_at[i][1] if i in sparse_at else last_keyword for i in items), np.float64, len(items))
        return cosines, np.minimum(keyword / keyword_total, 1.0) if keyword_total > 0 else keyword * 0

    def rescored(self, graded: dict[int, tuple[float, float, float, float]], query_pieces: np.ndarray,
                 piece_weights: np.ndarray | None, kind: str) -> dict[int, tuple[float, float, float, float]]:
        """The first fusion.late_depth passages by relevance graded again with late interaction
        (the query's pieces weighted by piece_weights) and the weights for the query's kind
        (indexer/search/relevance.py); the rest scaled below
        the lowest of them in their order, so the order the relevance gives is still the grade's.
        Passages stored without word pieces keep theirs."""
        first = sorted(graded, key=lambda i: (-graded[i][0], i))[:self.fusion.late_depth]
        held = self.index.pieces(first)
        ids = [i for i in first if i in held]
        if not ids:
            return graded
        cosines, shares = (np.array([graded[i][at] for i in ids]) for at in (1, 2))
        lates = pieces.late(query_pieces, [held[i] for i in ids], piece_weights)
        again = self.relevance.of_late(lates, cosines, shares, kind)
        rest = [i for i in graded if i not in held]
        scaled = below(np.array([graded[i][0] for i in rest]), float(again.min()))
        out = {i: (float(r), *graded[i][1:]) for i, r in zip(rest, scaled)}
        out.update((i, (float(r), graded[i][1], graded[i][2], float(n))) for i, r, n in zip(ids, again, lates))
        return out

    def relevance_of(self, cosines: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return self.relevance.of(cosines, shares)

    def grade(self, relevance: float) -> str:
        return "strong" if relevance >= self.relevance.strong else "weak" if relevance >= self.relevance.weak else "none"

    def by_article(self, ranked: list[tuple[int, float]], relevance: dict[int, float]
                   ) -> tuple[list[tuple[int, float]], dict[int, list[tuple[int, float]]]]:
        """Each article once, at its best passage's place, and for each best passage the
        article's MORE_PER_ARTICLE other matching passages of highest relevance (the absolute
        signal finds the answering paragraph more often than the fused order: docs/benchmarks.md,
        "Results by article")."""
        documents = self.index.documents_of([i for i, _ in ranked])
        lead: dict[int, int] = {}
        articles, others = [], {}
        for i, score in ranked:
            first = lead.setdefault(documents[i], i)
            if first == i:
                articles.append((i, score))
                others[i] = []
            else:
                others[first].append((i, score))
        more = {i: sorted(rest, key=lambda item: (-relevance[item[0]], item[0]))[:MORE_PER_ARTICLE]
                for i, rest in others.items()}
        return articles, more

    def facet_counts(self, ranked: list[tuple[int, float]], names: tuple[str, ...]) -> dict[str, list[dict]]:
        """For each facet, its FACET_VALUES most frequent values with the number of matching
        documents that have each (a document counts once per value): ranked holds the matches."""
        matches = [i for i, _ in ranked]
        values: dict[str, dict[str, set[int]]] = {name: {} for name in names}
        for number, metadata, section in self.index.describe(matches).values():
            found = {"outlet": [metadata.outlet], "month": [(metadata.published_at or "")[:7]],
                     "section": [section], "author": metadata.authors, "tag": metadata.tags,
                     "language": [metadata.language]}
            for name in names:
                for value in found[name]:
                    if value:
                        values[name].setdefault(value, set()).add(number)
        return {name: [{"value": value, "count": len(documents)} for value, documents in
                       sorted(values[name].items(), key=lambda item: (-len(item[1]), item[0]))[:FACET_VALUES]]
                for name in names}

    def by_time(self, ranked: list[tuple[int, float]], query: Query) -> list[tuple[int, float]]:
        """The recency boost (scores decay with the article's age; undated articles keep theirs),
        then for sort=newest the matches, newest first (undated last, ties by score)."""
        if not ranked:
            return ranked
        times = self.index.published([i for i, _ in ranked])
        scored = [(i, s, int(t)) for (i, s), t in zip(ranked, times)]
        if query.recency_half_life_days is not None:
            now = time.time()
            scored = sorted(((i, s * 0.5 ** (max(now - t, 0) / 86_400 / query.recency_half_life_days)
                              if t != NO_DATE else s, t) for i, s, t in scored), key=lambda h: (-h[1], h[0]))
        if query.sort == "newest":  # ranked holds only the matches
            scored = sorted(scored, key=lambda h: (h[2] == NO_DATE, -h[2], -h[1], h[0]))
        return [(i, s) for i, s, _ in scored]

    def highlight(self, stored: StoredPassage, vector: np.ndarray, weights: dict[str, float]) -> Highlight:
        """The passage's sentence that best answers: closest in meaning, helped by shared rare keywords.

        weights: idf of each query term, so sharing "casualties" counts for more than "many".
        """
        passage, spans = stored.passage, stored.sentence_spans
        if not len(spans):
            return Highlight(passage.start, passage.end, passage.text)
        scores = stored.sentence_vectors @ vector
        total = sum(weights.values())
        if total > 0 and len(spans) > 1:
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


def answer_record(text: str, answer: Answer, explain: bool = False, took_ms: float | None = None) -> dict:
    """The JSON form of an answer (SearchResponse in service/schemas.py declares it), shared by the
    API and `semsearch search --json`."""
    body = {"query": text, **({"took_ms": took_ms} if took_ms is not None else {}),
            "results": [hit_record(hit, explain and kind_of(text)) for hit in answer.hits],
            "no_good_match": answer.no_good_match}
    if answer.facets is not None:
        body["facets"] = answer.facets
    return body


def hit_record(hit: Hit, explain: str | bool = False) -> dict:
    """The JSON form of a hit, shared by the API and `semsearch search --json` (explain: the query's
    kind, whose weights graded it, when its evidence is to be shown)."""
    p = hit.passage
    record = {"rank": hit.rank, "score": round(hit.score, 6), "relevance": round(hit.relevance, 4),
              "match": hit.match, "text": p.text,
              "highlight": hit.highlight.text, "highlight_start": hit.highlight.start,
              "highlight_end": hit.highlight.end, "doc_id": p.doc_id, "title": p.title,
              "source": p.source, "section": p.section, "paragraph": p.paragraph,
              "start": p.start, "end": p.end, "passage_id": p.passage_id, **hit.metadata.record()}
    if hit.also_in is not None:
        record["also_in"] = list(hit.also_in)
    if hit.more is not None:
        record["more"] = [hit_record(other, explain) for other in hit.more]
    if explain:
        record["explain"] = {**{name: None if at is None else {"rank": at.rank, "score": round(at.score, 6)}
                                for name, at in (("dense", hit.dense), ("keyword", hit.keyword))},
                             "cosine": round(hit.evidence[0], 4), "keyword_share": round(hit.evidence[1], 4),
                             "late": None if math.isnan(hit.evidence[2]) else round(hit.evidence[2], 4),
                             "query_kind": explain}
    return record
