"""A generation of FAISS segments as one searchable snapshot (the IndexReader of indexer/index/engine.py).

Every list is computed per live segment and merged by score; tombstoned rows never come back.
BM25 uses statistics over all live segments (document frequency, passage count, average length),
so a passage scores the same whichever segment holds it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from indexer.text import neardup
from indexer.engines.faiss import postings
from indexer.engines.faiss.dense import DenseParams, rescored, top
from indexer.text.documents import Document
from indexer.index.engine import IndexInfo, KeptDocument, Selection, StoredPassage, counted
from indexer.text.keyword import KeywordParams
from indexer.text.metadata import NO_DATE, Filters, Metadata
from indexer.engines.faiss.segment import Segment


@dataclass
class SegmentView:
    """A segment as one generation sees it: which of its rows are deleted."""

    segment: Segment
    dead: np.ndarray            # sorted ids (passages and document numbers) tombstoned here
    live: np.ndarray | None     # (rows,) bool; None when no row is deleted
    live_rows: int
    live_length: int            # keyword terms over live rows
    norms: np.ndarray | None = None  # BM25 length norms under the generation's average length

    @classmethod
    def of(cls, segment: Segment, dead: np.ndarray) -> "SegmentView":
        live = None
        dead_rows = segment.rows_of(dead)
        if len(dead_rows):
            live = np.ones(len(segment), dtype=bool)
            live[dead_rows] = False
        lengths = np.asarray(segment.lengths, dtype=np.int64)
        live_length = int(lengths.sum() if live is None else lengths[live].sum())
        return cls(segment, dead, live, len(segment) - len(dead_rows), live_length)


class SegmentIndex:
    """The live segments of one generation, searched together."""

    remote = False  # in this process: a small index's search is fastest on the caller's own thread

    def __init__(self, generation: str, manifest: dict, views: list[SegmentView],
                 keyword_params: KeywordParams = KeywordParams()) -> None:
        self.generation, self.manifest, self.views = generation, manifest, views
        self.keyword_params = keyword_params
        self.frequencies: dict[tuple[str, ...], dict[str, int]] = {}
        self.total = sum(v.live_rows for v in views)
        self.average_length = sum(v.live_length for v in views) / max(self.total, 1)

    @property
    def info(self) -> IndexInfo:
        m = self.manifest
        return IndexInfo(self.generation, (m.get("model") or {}).get("name"), m.get("chunker"), m["documents"],
                         self.total, m.get("sentences", 0), len(self.views), m.get("built_at"))

    @counted("faiss")
    def select(self, filters: Filters) -> Selection:
        """Live rows of each segment whose passages match every given filter (via the id index,
        the documents' metadata in SQL and each row's publication time)."""
        parts, size = {}, 0
        for view in self.views:
            rows = None
            for column, values in (("doc_id", filters.doc_ids), ("source", filters.sources)):
                if values:
                    found = view.segment.rows_of(view.segment.select_ids(column, list(values)))
                    rows = found if rows is None else np.intersect1d(rows, found)
            found = view.segment.rows_matching(filters)
            if found is not None:
                rows = found if rows is None else np.intersect1d(rows, found)
            rows = np.arange(len(view.segment)) if rows is None else rows
            if view.live is not None:
                rows = rows[view.live[rows]]
            parts[view.segment.name], size = rows, size + len(rows)
        return Selection(parts, size)

    @counted("faiss")
    def dense(self, vector: np.ndarray, depth: int, selection: Selection | None = None,
              exact: bool = False, described: bool = False) -> list[tuple[int, float]]:
        """Best passages by cosine. Approximate segments propose candidates by their 8-bit codes;
        only the best of all segments' candidates are read back and rescored exactly, so a query
        reads a few hundred vectors whatever the number of segments."""
        one_thread_per_search()
        pool = []
        for view in self.views:
            rows = None if selection is None else selection.parts[view.segment.name]
            if rows is not None and not len(rows):
                continue
            pool.append((view, *view.segment.dense.candidates(vector, depth, mask=view.live, rows=rows,
                                                             use_exact=exact)))
        if not pool:
            return []
        wanted = max([depth] + [view.segment.dense.params.rescore for view, *_ in pool])
        every = np.concatenate([scores for _, _, scores, _ in pool])
        cut = -np.partition(-every, wanted - 1)[wanted - 1] if len(every) > wanted else -np.inf
        found = []
        for view, rows, scores, approximate in pool:
            keep = scores >= cut  # the best `wanted` of all segments (8-bit scores are within ~0.01)
            rows, scores = rows[keep], scores[keep]
            if approximate:
                rows, scores = rescored(view.segment.dense.vectors, vector, rows, depth)
            found.append((view.segment.ids[rows], scores))
        return merged(found, depth)

    def document_frequencies(self, terms: tuple[str, ...]) -> dict[str, int]:
        """Live document frequency of each distinct term; remembered for the last few queries, so
        marking the answer after a keyword search costs no second lookup."""
        if terms not in self.frequencies:
            if len(self.frequencies) > 64:
                self.frequencies.clear()
            self.frequencies[terms] = self.matches(list(terms))[1]
        return self.frequencies[terms]

    def matches(self, terms: list[str]) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, int]]:
        """Each segment's postings of the distinct terms (Segment.postings: rows, tfs, bounds),
        deleted rows included, and each term's live document frequency."""
        distinct = list(dict.fromkeys(terms))
        per_view, df = [], np.zeros(len(distinct), dtype=np.int64)
        for view in self.views:
            rows, tfs, bounds = view.segment.postings(distinct)
            if view.live is None:
                df += np.diff(bounds)
            else:
                live = np.concatenate([[0], np.cumsum(view.live[rows], dtype=np.int64)])
                df += live[bounds[1:]] - live[bounds[:-1]]
            per_view.append((rows, tfs, bounds))
        return per_view, dict(zip(distinct, df.tolist()))

    @counted("faiss")
    def term_weights(self, terms: list[str]) -> dict[str, float]:
        """BM25 idf of each query term over the live passages (0 for terms found nowhere)."""
        df = self.document_frequencies(tuple(terms))
        return {t: postings.idf(df[t], self.total) for t in df}

    @counted("faiss")
    def keyword(self, terms: list[str], depth: int, selection: Selection | None = None,
                described: bool = False) -> list[tuple[int, float]]:
        """Best passages by BM25 over all live segments; passages sharing no term are left out.
        (described: nothing to bring back here; the segments answer documents_of and the rest in memory.)"""
        if not terms or not self.total:
            return []
        per_view, df = self.matches(terms)
        self.frequencies[tuple(terms)] = df
        repeats = {t: terms.count(t) for t in df}  # a repeated query word counts again, as in bm25s
        weights = {t: repeats[t] * postings.idf(df[t], self.total) for t in df}
        found = []
        for view, (term_rows, tfs, bounds) in zip(self.views, per_view):
            allowed = view.live
            if selection is not None:
                allowed = np.zeros(len(view.segment), dtype=bool)
                allowed[selection.parts[view.segment.name]] = True  # selections hold live rows only
            rows, scores = postings.best_rows(term_rows, tfs, bounds, [weights[t] for t in df], self.norms(view),
                                              allowed, depth)
            found.append((view.segment.ids[rows], scores))
        return merged(found, depth)

    def norms(self, view: SegmentView) -> np.ndarray:
        """BM25 length norms of a segment's rows under this generation's average length (computed
        once per generation and segment: the average changes with every change)."""
        if view.norms is None:
            view.norms = postings.length_norms(view.segment.lengths, self.average_length, self.keyword_params)
        return view.norms

    @counted("faiss")
    def published(self, ids: Sequence[int]) -> np.ndarray:
        """The publication time (epoch seconds, NO_DATE: none) of each passage id's article."""
        ids = np.asarray(ids, dtype=np.int64)
        times = np.full(len(ids), NO_DATE, dtype=np.int64)
        for view in self.views:
            rows = np.searchsorted(view.segment.ids, ids)
            inside = rows < len(view.segment.ids)
            inside[inside] = view.segment.ids[rows[inside]] == ids[inside]
            if inside.any():
                times[inside] = view.segment.published[rows[inside]]
        return times

    @counted("faiss")
    def signatures(self, ids: Sequence[int]) -> np.ndarray:
        """The MinHash signature (neardup) of each passage id, read by row; EMPTY for unknown ids."""
        ids = np.asarray(ids, dtype=np.int64)
        marks = np.full((len(ids), neardup.PERMUTATIONS), neardup.EMPTY, dtype=np.uint32)
        for view in self.views:
            rows = np.searchsorted(view.segment.ids, ids)
            inside = rows < len(view.segment.ids)
            inside[inside] = view.segment.ids[rows[inside]] == ids[inside]
            if inside.any():
                marks[inside] = view.segment.signatures(rows[inside])
        return marks

    @counted("faiss")
    def describe(self, ids: Sequence[int]) -> dict[int, tuple[int, Metadata, str]]:
        """Document number, article metadata and section heading of each passage id (for facets)."""
        found: dict[int, tuple[int, Metadata, str]] = {}
        wanted = np.asarray(ids, dtype=np.int64)
        for view in self.views:
            segment = view.segment
            rows = segment.rows_of(wanted)
            if not len(rows):
                continue
            numbers = dict(zip(segment.ids[rows].tolist(), segment.doc_numbers[rows].tolist()))
            metadata = segment.metadata(list(numbers.values()))
            for passage_id, section in segment.sections(list(numbers)).items():
                found[passage_id] = (numbers[passage_id], metadata.get(numbers[passage_id], Metadata()), section)
        return found

    @counted("faiss")
    def documents_of(self, ids: Sequence[int]) -> dict[int, int]:
        """The document number of each passage id."""
        ids = np.asarray(ids, dtype=np.int64)
        numbers: dict[int, int] = {}
        for view in self.views:
            rows = np.searchsorted(view.segment.ids, ids)
            inside = rows < len(view.segment.ids)
            inside[inside] = view.segment.ids[rows[inside]] == ids[inside]
            numbers.update(zip(ids[inside].tolist(), np.asarray(view.segment.doc_numbers[rows[inside]]).tolist()))
        return numbers

    @counted("faiss")
    def pieces(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Each passage id's word piece codes (late interaction), read by row range; ids of a
        segment written before pieces are left out."""
        found: dict[int, np.ndarray] = {}
        wanted = np.asarray(ids, dtype=np.int64)
        for view in self.views:
            rows = view.segment.rows_of(wanted)
            held = view.segment.pieces(rows) if len(rows) else None
            if held is not None:
                found.update(zip(view.segment.ids[rows].tolist(), held))
        return found

    @counted("faiss")
    def fetch(self, ids: Sequence[int]) -> dict[int, StoredPassage]:
        """Passages with their sentences, read from disk for just these ids."""
        found: dict[int, StoredPassage] = {}
        wanted = np.asarray(ids, dtype=np.int64)
        for view in self.views:
            segment = view.segment
            rows = segment.rows_of(wanted)
            if not len(rows):
                continue
            row_of = dict(zip(segment.ids[rows].tolist(), rows.tolist()))
            numbers = dict(zip(row_of, segment.doc_numbers[rows].tolist()))
            metadata = segment.metadata(list(numbers.values()))
            for passage_id, passage in segment.passages(list(row_of)).items():
                spans, vectors = segment.sentences(row_of[passage_id])
                found[passage_id] = StoredPassage(passage_id, passage, spans, vectors,
                                                  metadata.get(numbers[passage_id], Metadata()))
        return found

    @counted("faiss")
    def document(self, doc_id: str) -> KeptDocument | None:
        """The live document with this id, its text as kept and its live passages in order."""
        for view in self.views:
            segment = view.segment
            for number, title, source, text, origin, metadata in segment.db.execute(
                    "SELECT doc_number, title, source, text, origin, metadata FROM documents WHERE doc_id = ?", (doc_id,)):
                if is_dead(view, number):
                    continue
                rows = np.flatnonzero(np.asarray(segment.doc_numbers) == number)
                ids = [int(i) for i in segment.ids[rows] if not is_dead(view, int(i))]
                passages = segment.passages(ids)
                kept = Document(doc_id=doc_id, title=title, source=source, text=text,
                                metadata=Metadata.from_json(metadata) if metadata else Metadata())
                return KeptDocument(kept, origin, tuple(sorted(passages.values(), key=lambda p: p.start)))
        return None

    @counted("faiss")
    def document_ids(self, offset: int, limit: int) -> tuple[int, list[tuple[str, str, str, str]]]:
        """How many live documents, and a page of (doc_id, title, source, origin) in doc_id order."""
        live = []
        for view in self.views:
            live += [(doc_id, title, source, origin) for number, doc_id, title, source, origin in view.segment.db.execute(
                "SELECT doc_number, doc_id, title, source, origin FROM documents") if not is_dead(view, number)]
        live.sort()
        return len(live), live[offset:offset + limit]

    def all_ids(self) -> np.ndarray:
        """Every live passage id (for tests and checks, not for queries)."""
        return np.concatenate([v.segment.ids if v.live is None else v.segment.ids[v.live] for v in self.views]
                              or [np.zeros(0, np.int64)])


def is_dead(view: SegmentView, number: int) -> bool:
    """Whether this generation tombstoned the passage id or document number in the view's segment."""
    at = int(np.searchsorted(view.dead, number))
    return at < len(view.dead) and int(view.dead[at]) == number


def merged(found: list[tuple[np.ndarray, np.ndarray]], depth: int) -> list[tuple[int, float]]:
    """Per-segment (ids, scores) lists merged into the depth best, ties broken by id."""
    if not found:
        return []
    ids, scores = top(np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]), depth)
    return list(zip(ids.tolist(), scores.astype(np.float64).tolist()))


def open_index(root, model: str, dimension: int, opened: dict[str, Segment] | None = None,
               params: DenseParams = DenseParams()) -> SegmentIndex:
    """The current generation as a SegmentIndex, checking format, model, checksums and counts.

    opened: segments this process already opened (and checked), by name; they are reused, so a
    reload after a small change opens only the new segment. New ones are added to it.
    """
    from indexer.engines.faiss import store

    name, manifest = store.verify(root, model, dimension)
    opened = {} if opened is None else opened
    tombstones = store.tombstones_of(root, name, manifest)
    views = []
    for entry in manifest["segments"]:
        if entry["name"] not in opened:
            opened[entry["name"]] = store.open_segment(root, entry, params)
        views.append(SegmentView.of(opened[entry["name"]], tombstones[entry["name"]]))
    index = SegmentIndex(name, manifest, views)
    postings.warm_up(max((len(v.segment) for v in views), default=0))
    if index.total != manifest["passages"]:
        raise store.IndexDamaged(f"index generation {name} is inconsistent: manifest says "
                                 f"{manifest['passages']} passages, segments hold {index.total}", store.repair_hint(root))
    return index


@functools.cache
def one_thread_per_search() -> None:
    """FAISS on one thread from this process's first search on: one query is tiny, and threads only
    fight concurrent requests (a build before any search keeps FAISS's threads for its training)."""
    import faiss

    faiss.omp_set_num_threads(1)
