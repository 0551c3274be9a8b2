"""The packaged model, loaded offline: vectors are unit length and every path agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from indexer.embedding import Embedder, query_encoder_for
from indexer.query_encoder import QueryEncoder
from tests.conftest import ROOT

QUERIES = ["why won't Russia stop", "how many casualties", "0-dimensional biomaterials lack inductive properties",
           "a question far longer than the model's window " * 60]


def test_query_fast_path_matches_the_model_pipeline(embedder):
    assert embedder.query_encoder is not None  # the packaged model takes the direct ONNX path
    reference = embedder.model.encode(QUERIES, normalize_embeddings=True)
    for query, expected in zip(QUERIES, reference):
        vector = embedder.embed_query(query)
        assert vector.dtype == np.float32 and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert float(vector @ expected) > 0.99999


def test_search_only_loader_skips_torch_and_gives_the_same_vectors(embedder):
    light = query_encoder_for()  # the embedder fixture has written the model's recipe
    assert isinstance(light, QueryEncoder)
    assert (light.name, light.dimension) == (embedder.name, embedder.dimension)
    reference = embedder.model.encode(QUERIES, normalize_embeddings=True)
    for query, expected in zip(QUERIES, reference):
        assert float(light.embed_query(query) @ expected) > 0.99999
    probe = ("import json, sys; from indexer.embedding import query_encoder_for; e = query_encoder_for(); "
             "print(json.dumps([type(e).__name__, sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=os.environ.copy(), capture_output=True,
                         text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["QueryEncoder", []], out.stderr


def test_a_broken_recipe_falls_back_to_the_full_model(embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CACHE_DIR", str(tmp_path))
    first = query_encoder_for()  # nothing cached here: the full model, which writes the recipe
    assert isinstance(first, Embedder)
    recipe = next(tmp_path.glob("*.query")) / "recipe.json"
    assert isinstance(query_encoder_for(), QueryEncoder)
    recipe.write_text(json.dumps({"version": 1, "onnx": str(tmp_path / "gone.onnx"), "dimension": 384, "max_tokens": 256}))
    fallback = query_encoder_for()
    assert isinstance(fallback, Embedder)
    assert float(fallback.embed_query(QUERIES[0]) @ embedder.embed_query(QUERIES[0])) > 0.99999
    assert isinstance(query_encoder_for(), QueryEncoder)  # the fallback wrote a good recipe again


def test_onnx_and_torch_give_the_same_vectors(embedder):
    torch_model = Embedder(backend="torch")
    assert torch_model.query_encoder is None
    for query in QUERIES:
        assert float(embedder.embed_query(query) @ torch_model.embed_query(query)) > 0.9999
