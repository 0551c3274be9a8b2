"""Late interaction's arithmetic (indexer/model/pieces.py): what is kept of a passage's word
pieces, and how a query's pieces score against them."""

from __future__ import annotations

import numpy as np

from indexer.model.pieces import CODE_SCALE, PIECE_DIMENSION, basis, codes, late, project, query_pieces


def test_the_basis_is_fixed_orthonormal_and_the_same_for_every_index():
    first, again = basis(384), basis(384)
    assert first.shape == (PIECE_DIMENSION, 384) and first is again
    assert np.allclose(first @ first.T, np.eye(PIECE_DIMENSION), atol=1e-5)
    assert basis(64).shape == (64, 64)  # a model narrower than the basis keeps every number


def test_codes_keep_each_pieces_direction_in_eight_bits():
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((40, 384)).astype(np.float32)
    kept = codes(tokens)
    assert kept.dtype == np.int8 and kept.shape == (40, PIECE_DIMENSION)
    lengths = np.linalg.norm(kept.astype(float), axis=1) / CODE_SCALE  # one scale: every code about unit long
    assert np.abs(lengths - 1).max() < 0.01
    back = kept / np.linalg.norm(kept, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", back, project(tokens)) > 0.999).all()
    assert codes(np.zeros((0, 384), np.float32)).shape == (0, PIECE_DIMENSION)


def test_a_passage_scores_by_the_best_match_of_each_query_piece_averaged():
    rng = np.random.default_rng(2)
    words = rng.standard_normal((6, 384)).astype(np.float32)
    query = query_pieces(words[:2])  # a query of the first two words
    holds_both, holds_one, holds_neither = codes(words[[0, 1, 4]]), codes(words[[0, 5]]), codes(words[[3, 4, 5]])
    scores = late(query, [holds_both, holds_one, holds_neither, np.zeros((0, PIECE_DIMENSION), np.int8)])
    assert scores[0] > 0.99 and 0.45 < scores[1] < 0.6 and abs(scores[2]) < 0.3 and scores[3] == 0
    assert scores[0] > scores[1] > scores[2]
    assert late(query_pieces(np.zeros((0, 384), np.float32)), [holds_both]).tolist() == [0.0]

