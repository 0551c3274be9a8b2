"""Keyword postings of one segment, and BM25 scored with corpus-wide statistics (pure numpy).

bm25s bakes idf and the average length into every stored score, so an index it built cannot take
new documents or lose deleted ones without being rebuilt whole. A segment therefore stores raw
term frequencies; the score is computed at query time from statistics over all live segments
(Lucene's formula, as bm25s' "lucene" method: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
tf part = tf / (tf + k1 * (1 - b + b * length / average length))). The tests hold it equal to
bm25s on the same texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from indexer.keyword import KeywordParams

MAX_TF = np.iinfo(np.uint16).max


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


def idf(df: int, total: int) -> float:
    """Lucene's BM25 inverse document frequency; 0 for a term that occurs nowhere."""
    return math.log1p((total - df + 0.5) / (df + 0.5)) if df > 0 else 0.0


def length_norms(lengths: np.ndarray, average_length: float, params: KeywordParams) -> np.ndarray:
    """k1 * (1 - b + b * length / average length) of each row: BM25's length normalization."""
    return (params.k1 * (1 - params.b + params.b * lengths / max(average_length, 1e-9))).astype(np.float32)


def term_scores(tfs: np.ndarray, norms: np.ndarray, weight: float) -> np.ndarray:
    """BM25 contribution of one term (weight = its idf times its count in the query) to rows with
    these term frequencies and length norms."""
    tfs = tfs.astype(np.float32)
    return np.float32(weight) * tfs / (tfs + norms)

