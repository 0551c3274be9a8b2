"""Nearest passages in one segment: an exact FAISS index in RAM, or an approximate one with the vectors on disk.

Small segments are scanned exactly. A segment of at least `ann_min_rows` passages also gets an
IVF index with 8-bit scalar-quantized codes (a quarter of the float size in RAM); its candidates
are rescored with the exact vectors from disk, so every segment returns true cosines and lists
from different segments merge fairly. Why IVF-SQ8 over HNSW: docs/benchmarks.md ("Scale",
approximate index choice). nprobe is calibrated at build time on the segment's own vectors to a target recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANN_FILE = "ann.faiss"


@dataclass(frozen=True)
class DenseParams:
    """When a segment gets an approximate index, and how it is built and searched."""

    ann_min_rows: int = 50_000
    lists_per_sqrt: int = 4       # nlist = this * sqrt(passages): 4,000 lists at a million (docs/benchmarks.md)
    target_recall: float = 0.98   # recall@10 against exact that nprobe is calibrated to
    # Lists searched = calibrated nprobe times this. The calibration's queries (mixes of the
    # segment's own vectors) can find more than real questions do: on a million passages of the
    # real model's distribution it picked 16 lists, where SciFact's questions reached recall 0.930
    # at 16, 0.950 at 32 and 0.958 at 45 (docs/benchmarks.md); probing more lists costs little
    # next to rescoring (0.65 -> 1.1 ms a search there).
    probe_factor: float = 2.83
    rescore: int = 100            # candidates rescored exactly (at least the depth asked for)
    brute_force_rows: int = 20_000  # a filter leaving fewer rows is scanned exactly: cheaper, and exact


def top(rows: np.ndarray, scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The depth best (row, score) pairs, best first, ties broken by row."""
    if len(rows) > depth:
        threshold = -np.partition(-scores, depth - 1)[depth - 1]
        above = np.flatnonzero(scores > threshold)
        tied = np.flatnonzero(scores == threshold)
        tied = tied[np.argsort(rows[tied], kind="stable")[:depth - len(above)]]  # lowest rows win a tie
        keep = np.concatenate([above, tied])
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


def exact(vectors, query: np.ndarray, depth: int, rows: np.ndarray | None = None,
          mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner product over the given rows (all rows when None), skipping rows the mask drops.
    vectors: an array, or a RowFile read block by block."""
    if rows is None:
        scores = vectors @ query if isinstance(vectors, np.ndarray) else \
            np.concatenate([block @ query for _, block in vectors.blocks()] or [np.zeros(0, np.float32)])
        rows = np.arange(len(scores)) if mask is None else np.flatnonzero(mask)
        scores = scores if mask is None else scores[rows]
    else:
        scores = vectors[rows] @ query if len(rows) else np.zeros(0, np.float32)
    return top(rows, scores, depth)


def build_ann(vectors: np.ndarray, path: Path, params: DenseParams) -> dict:
    """Write an IVF-SQ8 index over vectors and return its settings (nlist, calibrated nprobe)."""
    import faiss

    n, dimension = vectors.shape
    nlist = max(16, int(params.lists_per_sqrt * math.sqrt(n)))
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dimension, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
    index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    for first in range(0, n, 100_000):
        index.add(np.ascontiguousarray(vectors[first:first + 100_000], dtype=np.float32))
    nprobe = calibrate(index, vectors, params)
    faiss.write_index(index, str(path))
    return {"kind": "ivf-sq8", "nlist": nlist, "nprobe": nprobe}


def calibrate(index, vectors: np.ndarray, params: DenseParams) -> int:
    """The smallest nprobe (1, 2, 3, 4, 6, 8, 11, ...: steps of about sqrt 2, so it overshoots
    by less than doubling would) whose rescored recall@10 reaches the target on queries made of
    the segment's own vectors, three at a time: like real questions, such a mix lies between
    passages (on SciFact vectors its recall per nprobe tracks the real queries' within 0.02,
    where noisy copies of single vectors overstate it badly; bench/ann.py)."""
    rng = np.random.default_rng(1)
    picked = np.sort(rng.integers(0, len(vectors), (100, 3)), axis=1)
    queries = np.asarray(vectors[picked.ravel()], dtype=np.float32).reshape(100, 3, -1).sum(axis=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = [set(rows.tolist()) for rows in exact_many(vectors, queries, 10)]
    step = 1
    while True:
        nprobe = min(round(2 ** (step / 2)), index.nlist)
        index.nprobe = nprobe
        _, found = index.search(queries, params.rescore)
        recall = np.mean([len(t & set(rescored(vectors, q, f, 10)[0].tolist())) / 10
                          for q, f, t in zip(queries, found, truth)])
        if recall >= params.target_recall or nprobe >= index.nlist:
            return nprobe
        step += 1


def exact_many(vectors, queries: np.ndarray, depth: int) -> list[np.ndarray]:
    """The exact top rows of each query, in one pass over the vectors (block by block)."""
    blocks = [(0, vectors)] if isinstance(vectors, np.ndarray) else vectors.blocks()
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for first, block in blocks:
        scores = np.hstack([best_scores, queries @ block.T])
        rows = np.hstack([best_rows, np.broadcast_to(np.arange(first, first + len(block)), (len(queries), len(block)))])
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        best_rows, best_scores = np.take_along_axis(rows, keep, 1), np.take_along_axis(scores, keep, 1)
    return list(best_rows)


def rescored(vectors, query: np.ndarray, candidates: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The depth best of candidates (-1 = none) by their exact vectors."""
    candidates = np.sort(candidates[candidates >= 0])  # sorted reads are kinder to the page cache
    return exact(vectors, query, depth, rows=candidates)


class DenseSegment:
    """One segment's vectors and how they are searched: a small segment's vectors sit in RAM in an
    exact FAISS index (its SIMD scan took 0.6 ms where numpy's product took 1.4 ms on SciFact's
    9,880); a large segment has an approximate index in RAM and its vectors stay on disk, read
    back only for candidates."""

    def __init__(self, folder: Path, ann: dict | None, params: DenseParams) -> None:
        import faiss

        from indexer.engines.faiss.rowfile import RowFile, load

        self.params = params
        self.ann = self.flat = None
        if ann:
            # In RAM (a quarter of the float vectors): read with IO_FLAG_MMAP, FAISS 1.15 took 4 ms
            # instead of 0.07 ms per IVF search (bench/ann.py).
            self.ann = faiss.read_index(str(folder / ANN_FILE))
            self.nprobe = min(int(ann["nlist"]), round(int(ann["nprobe"]) * params.probe_factor))
            self.vectors = RowFile(folder / "vectors.npy")
        else:
            vectors = load(folder / "vectors.npy")
            self.flat = faiss.IndexFlatIP(vectors.shape[1])
            self.flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
            # The index's own copy, seen as an array (no second copy) for rows a filter names.
            self.vectors = faiss.rev_swig_ptr(self.flat.get_xb(), vectors.size).reshape(vectors.shape) \
                if len(vectors) else vectors

    def search(self, query: np.ndarray, depth: int, mask: np.ndarray | None = None,
               rows: np.ndarray | None = None, use_exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Best rows by exact cosine (see candidates)."""
        found, scores, approximate = self.candidates(query, depth, mask, rows, use_exact)
        return rescored(self.vectors, query, found, depth) if approximate else (found, scores)

    def candidates(self, query: np.ndarray, depth: int, mask: np.ndarray | None = None,
                   rows: np.ndarray | None = None, use_exact: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
        """(rows, scores, approximate): best rows by cosine, or, from the approximate index, the
        params.rescore (at least depth) best by 8-bit codes, whose scores the caller rescores.
        mask: rows that may be returned (None: all); rows: when a filter already names the
        candidate rows. use_exact: never the approximate index."""
        if rows is not None and (len(rows) <= self.params.brute_force_rows or self.ann is None or use_exact):
            return (*exact(self.vectors, query, depth, rows=rows), False)
        if self.ann is None:
            return (*self.faiss_search(self.flat, query, depth, mask), False)
        if use_exact:
            return (*exact(self.vectors, query, depth, mask=mask), False)
        if rows is not None:
            mask = np.zeros(len(self.vectors), dtype=bool)
            mask[rows] = True
        return (*self.faiss_search(self.ann, query, max(depth, self.params.rescore), mask, self.nprobe), True)

    @staticmethod
    def faiss_search(index, query: np.ndarray, depth: int, mask: np.ndarray | None = None,
                     nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of a FAISS search, skipping rows the mask drops."""
        import faiss

        params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe else faiss.SearchParameters()
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")  # kept alive until the search returns
            params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        depth = min(depth, index.ntotal)
        if depth <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores, found = index.search(query[None, :], depth, params=params)
        keep = found[0] >= 0
        return found[0][keep], scores[0][keep]
