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



def test_weighted_query_pieces_count_as_much_as_their_weight():
    """A query's pieces weighted (by their words' idf in the product): the passage holding the rare
    word's piece scores above one holding only the common word's; zero weights count as equal ones."""
    rng = np.random.default_rng(3)
    words = rng.standard_normal((4, 384)).astype(np.float32)
    query = query_pieces(words[:2])  # a common word, then a rare one
    common_only, rare_only = codes(words[[0, 2]]), codes(words[[1, 3]])
    alike = late(query, [common_only, rare_only])
    assert abs(alike[0] - alike[1]) < 0.05
    weighted = late(query, [common_only, rare_only], np.array([1.0, 6.0]))
    assert weighted[1] > 0.8 > 0.3 > weighted[0]
    assert np.allclose(late(query, [common_only, rare_only], np.zeros(2)), alike)


def test_a_query_piece_takes_the_keyword_terms_of_the_word_it_is_part_of():
    from indexer.model.hashing_encoder import HashingEncoder
    from indexer.text.keyword import Analyzer

    text = "Why won't Putin’s war stop?"
    spans = [(0, 3), (4, 7), (7, 8), (8, 9), (10, 15), (15, 16), (16, 17), (18, 21), (22, 26), (26, 27)]
    terms = Analyzer().piece_terms(text, spans)
    assert terms == [["whi"], [], [], [], ["putin"], ["putin"], ["putin"], ["war"], ["stop"], []]
    _, pieces, found = HashingEncoder().embed_query_pieces("how many casualties?")
    assert found.tolist() == [[0, 3], [4, 8], [9, 19]] and len(pieces) == 3


def test_the_models_query_pieces_come_with_where_they_are_in_the_text(embedder):
    text = "Why won't Russia stop?"
    _, pieces, spans = embedder.embed_query_pieces(text)
    assert len(pieces) == len(spans) == 7
    assert [text[a:b] for a, b in spans] == ["Why", "won", "'", "t", "Russia", "stop", "?"]
