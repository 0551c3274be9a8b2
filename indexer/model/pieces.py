"""Late interaction: a passage kept as its own word pieces' vectors, a query scored against it by
the mean over the query's pieces of the best cosine to any of the passage's (as ColBERT scores),
each piece weighted as the searcher weighs it (its word's idf: Searcher.piece_weights).

The pieces' vectors are the model's token vectors from the forward pass that embeds the passage
(read in the context of its title and section, as the passage vector is), projected on a fixed
random orthogonal basis of PIECE_DIMENSION numbers (seeded: no data fits it, every index and
every model of a dimension gets the same one) and kept in 8 bits, one code a number: 128 bytes a
piece. Every piece is a unit vector coded at one fixed scale (CODE_SCALE codes to 1.0), so codes
all have about the same length and a search takes the dot product for the cosine without
normalising thousands of pieces (a number beyond +-127/CODE_SCALE, rare in a unit vector of 128
numbers, is clipped). docs/benchmarks.md ("Designs beyond the scorer", late interaction) has the
measurements behind these choices.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

PIECE_DIMENSION = 128
SEED = 0
CODE_SCALE = 254.0  # a code of 127 stands for 0.5; unit vectors' codes are about CODE_SCALE long
# What an index records of how its pieces were made: pieces made another way are never read as these
# (engines leave them out, and a build embeds their passages again).
PIECES_FORMAT = f"orthogonal-{PIECE_DIMENSION}-seed{SEED}-int8x{CODE_SCALE:g}"


@lru_cache(maxsize=4)
def basis(dimension: int) -> np.ndarray:
    """(min(PIECE_DIMENSION, dimension), dimension) float32 with orthonormal rows, the same every time."""
    size = min(PIECE_DIMENSION, dimension)
    q, _ = np.linalg.qr(np.random.default_rng(SEED).standard_normal((dimension, size)))
    return np.ascontiguousarray(q.T, dtype=np.float32)


def project(tokens: np.ndarray) -> np.ndarray:
    """Token vectors (n, dimension) -> unit vectors on the basis (n, PIECE_DIMENSION) float32."""
    tokens = np.asarray(tokens, dtype=np.float32)
    projected = tokens @ basis(tokens.shape[-1]).T
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    return projected / np.where(norms > 0, norms, 1.0)


def codes(tokens: np.ndarray) -> np.ndarray:
    """Token vectors (n, dimension) -> int8 codes (n, PIECE_DIMENSION): each piece's projected
    unit vector at CODE_SCALE."""
    return np.clip(np.round(project(tokens) * CODE_SCALE), -127, 127).astype(np.int8)


def query_pieces(tokens: np.ndarray) -> np.ndarray:
    """A query's token vectors (m, dimension) -> its pieces as late() takes them (unit, float32).
    Each piece is weighed on its own (a name cut into four pieces counts four times): weighing each
    word once instead put the right paragraph first less often on every question set
    (docs/benchmarks.md, late interaction)."""
    return project(tokens)


def late(query: np.ndarray, passages: Sequence[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """Late-interaction score of each passage (its int8 codes) for a query's pieces: the mean over
    the query's pieces (weighted by weights, when given) of the best cosine to any of the
    passage's; 0 for a passage without pieces or a query without any."""
    scores = np.zeros(len(passages), dtype=np.float64)
    sizes = np.fromiter((len(p) for p in passages), dtype=np.int64, count=len(passages))
    if not len(query) or not sizes.any():
        return scores
    held = np.flatnonzero(sizes)
    stacked = np.concatenate([passages[i] for i in held], dtype=np.float32) if len(held) > 1 else \
        passages[held[0]].astype(np.float32)
    # (all pieces, query pieces): the passages' pieces as the tall operand, which OpenBLAS's AVX-512
    # kernels multiply faster than the other way round (the same on AVX2)
    similarity = stacked @ (query.astype(np.float32) / CODE_SCALE).T
    starts = np.concatenate([[0], np.cumsum(sizes[held])[:-1]])
    best = np.maximum.reduceat(similarity, starts, axis=0)  # (passages, query pieces)
    if weights is None or not np.sum(weights) > 0:
        scores[held] = best.mean(axis=1)
    else:
        scores[held] = (best @ np.asarray(weights, np.float64)) / float(np.sum(weights))
    return scores
