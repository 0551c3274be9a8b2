"""Keyword postings of one segment, and BM25 scored with corpus-wide statistics (pure numpy).

bm25s bakes idf and the average length into every stored score, so an index it built cannot take
new documents or lose deleted ones without being rebuilt whole. A segment therefore stores raw
term frequencies; the score is computed at query time from statistics over all live segments
(Lucene's formula, as bm25s' "lucene" method: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
tf part = tf / (tf + k1 * (1 - b + b * length / average length))). The tests hold it equal to
bm25s on the same texts.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np

from indexer.engines.faiss import rowfile
from indexer.text.keyword import KeywordParams, idf  # noqa: F401 (segments.py names it postings.idf)

MAX_TF = np.iinfo(np.uint16).max
COMPILED_FROM = 50_000  # rows of a segment from which keyword scoring runs compiled (best_rows)


@dataclass(frozen=True)
class Postings:
    """Term-major postings: term i occurs in rows[starts[i]:starts[i] + counts[i]] with tfs."""

    terms: list[str]          # sorted
    starts: np.ndarray        # (terms,) int64
    counts: np.ndarray        # (terms,) int64
    rows: np.ndarray          # (postings,) int32, ascending within a term
    tfs: np.ndarray           # (postings,) uint16
    lengths: np.ndarray       # (rows,) int32: terms per row, repeats included


def build(term_lists: Sequence[Sequence[str]]) -> Postings:
    """Postings of rows whose analyzed terms are term_lists[row]."""
    vocabulary: dict[str, int] = {}
    lengths = np.fromiter((len(terms) for terms in term_lists), dtype=np.int64, count=len(term_lists))
    ids = np.fromiter((vocabulary.setdefault(t, len(vocabulary)) for terms in term_lists for t in terms),
                      dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(term_lists), dtype=np.int64), lengths)
    return from_pairs(list(vocabulary), ids, rows, np.ones(len(ids), dtype=np.int64), lengths)


def from_pairs(vocabulary: list[str], term_ids: np.ndarray, rows: np.ndarray, tfs: np.ndarray,
               lengths: np.ndarray) -> Postings:
    """Postings from (term id, row, tf) triples, repeats summed; vocabulary[term id] is the term."""
    order = np.argsort(vocabulary, kind="stable")
    rank = np.empty(len(vocabulary), dtype=np.int64)
    rank[order] = np.arange(len(vocabulary))
    width = max(len(lengths), 1)
    keys = rank[term_ids] * width + rows  # term-major, then row
    by_key = np.argsort(keys, kind="stable")
    unique, first = np.unique(keys[by_key], return_index=True)
    summed = np.add.reduceat(tfs[by_key], first) if len(keys) else tfs
    counts = np.bincount(unique // width, minlength=len(vocabulary)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return Postings(terms=[vocabulary[i] for i in order], starts=starts, counts=counts,
                    rows=(unique % width).astype(np.int32),
                    tfs=np.minimum(summed, MAX_TF).astype(np.uint16), lengths=lengths.astype(np.int32))


def length_norms(lengths: np.ndarray, average_length: float, params: KeywordParams) -> np.ndarray:
    """k1 * (1 - b + b * length / average length) of each row: BM25's length normalization."""
    return (params.k1 * (1 - params.b + params.b * lengths / max(average_length, 1e-9))).astype(np.float32)


def term_scores(tfs: np.ndarray, norms: np.ndarray, weight: float) -> np.ndarray:
    """BM25 contribution of one term (weight = its idf times its count in the query) to rows with
    these term frequencies and length norms."""
    tfs = tfs.astype(np.float32)
    return np.float32(weight) * tfs / (tfs + norms)



def _best_rows(rows, tfs, bounds, weights, norms, allowed, scores, depth):
    """Numba kernel of best_rows: returns (rows, scores) of at most depth rows, unordered.

    Branch-light on purpose: the postings are summed into scores without a test, then one pass
    over scores in row order keeps a min-heap of the depth best, whose top is rarely beaten (a
    test per posting, "seen before?", mispredicted half the time and cost 4 ms at 500,000 postings).
    """
    for term in range(weights.shape[0]):
        weight = np.float32(weights[term])
        for i in range(bounds[term], bounds[term + 1]):
            row = rows[i]
            tf = np.float32(tfs[i])
            # float32 gain, as term_scores computes it, summed in float32: the buffer is 4 MB at a
            # million rows instead of 8, a third less time, more under concurrent queries (bench notes)
            scores[row] += weight * tf / (tf + norms[row])
    filtered = allowed.shape[0] > 0
    size = 0
    heap_rows = np.empty(depth, np.int64)
    heap_scores = np.empty(depth, np.float64)
    threshold = 0.0  # only positive scores, then only scores above the heap's worst
    for row in range(scores.shape[0]):
        score = scores[row]
        if score <= threshold or (filtered and not allowed[row]):
            continue
        # The heap's top is its worst: lowest score, and of equal scores the highest row. Rows
        # come in ascending order, so a row that only ties the worst never displaces it.
        if size < depth:
            at = size
            size += 1
            while at > 0:  # sift up; this row is the highest so far, so it loses every tie
                parent = (at - 1) // 2
                if heap_scores[parent] < score:
                    break
                heap_rows[at], heap_scores[at] = heap_rows[parent], heap_scores[parent]
                at = parent
        else:
            at = 0
            while True:  # replace the worst, sift down
                child = 2 * at + 1
                if child >= size:
                    break
                if child + 1 < size and (heap_scores[child + 1] < heap_scores[child] or (
                        heap_scores[child + 1] == heap_scores[child] and heap_rows[child + 1] > heap_rows[child])):
                    child += 1
                if score <= heap_scores[child]:  # a tie: this row is higher, so worse
                    break
                heap_rows[at], heap_scores[at] = heap_rows[child], heap_scores[child]
                at = child
        heap_rows[at], heap_scores[at] = row, score
        if size == depth:
            threshold = heap_scores[0]
    for i in range(rows.shape[0]):  # leave the buffer clean for the next query
        scores[rows[i]] = 0.0
    return heap_rows[:size], heap_scores[:size]


@lru_cache(maxsize=1)
def kernel():
    """_best_rows compiled by numba (cached on disk next to this module, so later processes skip
    the compile)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_best_rows)


def warm_up(rows: int) -> None:
    """Compile (or load the compiled) keyword kernel, and the kernel that reads many rows at once
    (rowfile.read_kernel), now when a segment of `rows` will use them, not in the first query
    (0.4-0.9 s)."""
    if rows >= COMPILED_FROM:
        rowfile.read_kernel()
        kernel()(np.zeros(1, np.int32), np.ones(1, np.uint16), np.array([0, 1]), np.ones(1, np.float32),
                 np.ones(1, np.float32), np.zeros(0, np.bool_), np.zeros(1, np.float32), 1)


class Scratch:
    """Zeroed float32 score buffers, reused (a fresh 4 MB buffer per query cost more in page faults than
    the scoring). A query takes one of its segment's size and gives it back zeroed, so there are
    only as many as queries ever scored at once, whatever the number of threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: dict[int, list[np.ndarray]] = {}

    @contextmanager
    def buffer(self, rows: int) -> Iterator[np.ndarray]:
        with self.lock:
            spare = self.free.get(rows)
            scores = spare.pop() if spare else None
        if scores is None:
            scores = np.zeros(rows, np.float32)
        try:
            yield scores
        except BaseException:
            scores[:] = 0.0  # the kernel may not have cleaned up
            raise
        finally:
            with self.lock:
                if len(self.free) > 16 and rows not in self.free:
                    self.free.clear()  # segments come and go with merges: forget old sizes
                self.free.setdefault(rows, []).append(scores)


SCRATCH = Scratch()


def best_rows(rows: np.ndarray, tfs: np.ndarray, bounds: np.ndarray, weights: Sequence[float], norms: np.ndarray,
              allowed: np.ndarray | None, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The depth best rows by BM25 (sum over terms of weight * tf / (tf + norm)), best first, ties
    broken by row; rows the allowed mask drops are skipped, rows without a positive score left out.

    Term i occurs in rows[bounds[i]:bounds[i + 1]] with frequencies tfs[...] (Segment.postings);
    norms: length_norms of every row. A segment of COMPILED_FROM rows or more takes one compiled
    pass over the postings into a reused buffer, then a heap of the depth best (see _best_rows); a
    smaller one is scored by numpy, which sums in the same order (so both give the same scores)
    and spares a one-off search loading numba (0.4-0.6 s).
    """
    from indexer.engines.faiss.dense import top

    if not len(rows) or depth <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    rows, tfs = rows.astype(np.int32, copy=False), tfs.astype(np.uint16, copy=False)
    bounds = np.asarray(bounds, dtype=np.int64)
    if len(norms) >= COMPILED_FROM:
        with SCRATCH.buffer(len(norms)) as buffer:
            found, scores = kernel()(rows, tfs, bounds, np.asarray(weights, np.float32), norms,
                                     np.zeros(0, np.bool_) if allowed is None else allowed, buffer, depth)
        return top(found, scores, depth)
    scores = np.zeros(len(norms), np.float32)
    for a, b, w in zip(bounds, bounds[1:], weights):  # a term's rows are distinct: += adds each once
        scores[rows[a:b]] += term_scores(tfs[a:b], norms[rows[a:b]], w)
    keep = scores > 0 if allowed is None else (scores > 0) & allowed
    found = np.flatnonzero(keep)
    return top(found, scores[found], depth)
