"""The packaged model, loaded offline: vectors are unit length and every path agrees."""

from __future__ import annotations

import numpy as np

from indexer.embedding import Embedder

QUERIES = ["why won't Russia stop", "how many casualties", "0-dimensional biomaterials lack inductive properties"]


def test_query_fast_path_matches_the_model_pipeline(embedder):
    assert embedder.session is not None  # the packaged model takes the direct ONNX path
    reference = embedder.model.encode(QUERIES, normalize_embeddings=True)
    for query, expected in zip(QUERIES, reference):
        vector = embedder.embed_query(query)
        assert vector.dtype == np.float32 and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert float(vector @ expected) > 0.99999


def test_onnx_and_torch_give_the_same_vectors(embedder):
    torch_model = Embedder(backend="torch")
    assert torch_model.session is None
    for query in QUERIES:
        assert float(embedder.embed_query(query) @ torch_model.embed_query(query)) > 0.9999
