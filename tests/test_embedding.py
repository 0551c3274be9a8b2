"""The packaged model, loaded offline: vectors are unit length and every path agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from indexer.text.chunking import sentence_spans
from indexer.model.embedding import Embedder, light_model_for
from indexer.model.onnx_encoder import OnnxEncoder, variant
from tests.conftest import ROOT, SEED_FILE

# The sentence-transformers loads (about ten seconds each) happen once, on one worker.
pytestmark = pytest.mark.xdist_group("sentence-transformers")

QUERIES = ["why won't Russia stop", "how many casualties", "0-dimensional biomaterials lack inductive properties",
           "a question far longer than the model's window " * 60]


def torch_free(code: str) -> list:
    """Run code in a fresh interpreter; returns what it prints as JSON, after asserting that
    neither torch nor sentence-transformers was imported."""
    probe = code + "; import sys; print(json.dumps(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + probe], cwd=ROOT, env=os.environ.copy(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pipeline() -> Embedder:
    """The model loaded by sentence-transformers (ONNX backend): the reference every path must match."""
    return Embedder()


@pytest.fixture(scope="module")
def torch_model() -> Embedder:
    model = Embedder(backend="torch")
    assert model.onnx is None
    return model


def test_query_fast_path_matches_the_model_pipeline(pipeline):
    assert pipeline.onnx is not None  # the packaged model runs on its ONNX session directly
    reference = pipeline.model.encode(QUERIES, normalize_embeddings=True)
    for query, expected in zip(QUERIES, reference):
        vector = pipeline.embed_query(query)
        assert vector.dtype == np.float32 and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert float(vector @ expected) > 0.99999


def test_the_model_without_torch_gives_the_pipelines_vectors_for_queries_and_passages(pipeline):
    light = light_model_for()  # the pipeline fixture has written the model's recipe
    assert isinstance(light, OnnxEncoder)
    assert (light.name, light.dimension, light.max_tokens) == (pipeline.name, pipeline.dimension, pipeline.max_tokens)
    reference = pipeline.model.encode(QUERIES, normalize_embeddings=True)
    for query, expected in zip(QUERIES, reference):
        assert float(light.embed_query(query) @ expected) > 0.99999
    # Passages of different lengths in one padded batch, against sentence-transformers' own pooling.
    text = SEED_FILE.read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n") if len(p) > 40]
    vectors, _ = light.embed_passages(paragraphs, [[] for _ in paragraphs], progress=False)
    expected = pipeline.model.encode(paragraphs, normalize_embeddings=True)
    assert np.min(np.sum(vectors * expected, axis=1)) > 0.99999
    assert light.token_spans(text) == pipeline.token_spans(text)


def test_sentence_vectors_agree_with_the_torch_runtime(embedder, torch_model):
    text = SEED_FILE.read_text(encoding="utf-8")
    paragraph = max(text.split("\n"), key=len)
    spans = [sentence_spans(paragraph)]
    ours, theirs = embedder.embed_passages([paragraph], spans, False), torch_model.embed_passages([paragraph], spans, False)
    assert float(ours[0][0] @ theirs[0][0]) > 0.9999
    assert len(ours[1]) == len(spans[0]) and np.min(np.sum(ours[1] * theirs[1], axis=1)) > 0.9999


def test_search_index_and_query_run_without_torch(embedder, tmp_path):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "note.txt").write_text("Harbour Reopens\nThe harbour reopened on Monday after repairs.\n")
    assert torch_free(f"from indexer.cli import main; main(['index', '{tmp_path / 'seeds'}', '--out', '{tmp_path / 'index'}'])") == []
    assert torch_free(f"from indexer.cli import main; main(['search', 'harbour', '--index', '{tmp_path / 'index'}'])") == []


def test_a_broken_recipe_falls_back_to_the_full_model(embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CACHE_DIR", str(tmp_path))
    first = light_model_for()  # nothing cached here: the full model, which writes the recipe
    assert isinstance(first, Embedder)
    recipe = next(tmp_path.glob("*.query")) / "recipe.json"
    assert isinstance(light_model_for(), OnnxEncoder)
    broken = json.loads(recipe.read_text()) | {"onnx": str(tmp_path / "gone.onnx")}
    recipe.write_text(json.dumps(broken))
    fallback = light_model_for()
    assert isinstance(fallback, Embedder)
    assert float(fallback.embed_query(QUERIES[0]) @ embedder.embed_query(QUERIES[0])) > 0.99999
    assert isinstance(light_model_for(), OnnxEncoder)  # the fallback wrote a good recipe again


def test_onnx_and_torch_give_the_same_vectors(embedder, torch_model):
    for query in QUERIES:
        assert float(embedder.embed_query(query) @ torch_model.embed_query(query)) > 0.9999


def seed_paragraphs() -> list[str]:
    return [p for p in SEED_FILE.read_text(encoding="utf-8").split("\n") if len(p) > 40]


def test_bf16_and_int8_vectors_stay_close_to_the_reference_pipeline(pipeline):
    """The faster precisions against sentence-transformers' own vectors (cosine, queries and
    passages in padded batches) and their sentence vectors against fp32's."""
    paragraphs = seed_paragraphs()
    reference_queries = pipeline.model.encode(QUERIES, normalize_embeddings=True)
    reference_passages = pipeline.model.encode(paragraphs, normalize_embeddings=True)
    spans = [sentence_spans(p) for p in paragraphs]
    _, fp32_sentences = light_model_for(precision="fp32").embed_passages(paragraphs, spans, False)
    for precision, lowest in (("bf16", 0.999), ("int8", 0.99), ("int8-static", 0.99)):
        model = light_model_for(precision=precision)
        assert isinstance(model, OnnxEncoder) and model.name == f"{pipeline.name}@{variant(precision)}"
        queries = np.array([model.embed_query(q) for q in QUERIES])
        passages, sentences = model.embed_passages(paragraphs, spans, False)
        for ours, theirs in ((queries, reference_queries), (passages, reference_passages), (sentences, fp32_sentences)):
            assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-4)
            cosines = np.sum(ours * theirs, axis=1)
            assert cosines.min() > lowest and cosines.mean() > (lowest + 1) / 2, (precision, cosines.min())


def test_int8_static_is_named_by_its_calibration_so_an_index_never_mixes_two(tmp_path, monkeypatch):
    """The calibration text decides int8-static's vectors: other text is another model identity
    (manifest and embedding cache), and an index built with either still asks for int8-static."""
    from indexer.model import onnx_encoder
    from indexer.model.embedding import choose_precision

    shipped = light_model_for(precision="int8-static").name
    assert shipped.startswith("sentence-transformers/all-MiniLM-L6-v2@int8-static-")
    assert choose_precision(None, shipped) == "int8-static"
    assert choose_precision(None, "sentence-transformers/all-MiniLM-L6-v2@int8") == "int8"
    other_text = tmp_path / "calibration.txt"
    other_text.write_text(onnx_encoder.CALIBRATION.read_text(encoding="utf-8") + "\n\nOne more paragraph.\n")
    monkeypatch.setattr(onnx_encoder, "CALIBRATION", other_text)
    onnx_encoder.static_digest.cache_clear()
    try:
        assert variant("int8-static") != shipped.rpartition("@")[2]
        assert choose_precision(None, f"sentence-transformers/all-MiniLM-L6-v2@{variant('int8-static')}") == "int8-static"
    finally:
        onnx_encoder.static_digest.cache_clear()


def test_an_unknown_precision_is_a_clear_error():
    import pytest

    from indexer.model.embedding import ModelError

    with pytest.raises(ModelError, match="use one of fp32, bf16, int8"):
        light_model_for(precision="fp16")


def test_the_model_cache_keeps_one_copy_per_model_content_and_clears_out_the_rest(tmp_path, monkeypatch):
    """Two installs of the same model (other folders, other file times) share one cache entry; the
    per-install copies of the old layout, and other versions of the model unused for a month, go."""
    import os
    import time

    from indexer.model import embedding

    cache = tmp_path / "cache"
    monkeypatch.setenv("SEMSEARCH_CACHE_DIR", str(cache))
    monkeypatch.setattr(embedding, "TIDIED", set())
    installs = []
    for n, stamp in enumerate((1_700_000_000, 1_800_000_000)):
        folder = tmp_path / f"venv{n}" / "model"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights " * 1000)
        os.utime(folder / "model.safetensors", (stamp, stamp))
        installs.append(folder)
    first, second = (embedding.model_cache_dir(str(folder)) for folder in installs)
    assert first == second and first.parent == cache
    (installs[1] / "model.safetensors").write_bytes(b"other weights " * 1000)  # a new version of the model
    assert embedding.model_cache_dir(str(installs[1])) != first

    old = [cache / "model-90868376-1796530690", cache / "model-90868376-1796530690.query"]
    other_version, unused, elsewhere = cache / "model-0123456789abcdef", cache / "model-fedcba9876543210", \
        cache / "e5-small-0123456789abcdef"
    for entry in [*old, other_version, unused, elsewhere]:
        entry.mkdir(parents=True)
        (entry / "file").write_bytes(b"x" * 100)
    month_ago = time.time() - 31 * 86_400
    (unused / ".used").touch()
    os.utime(unused / ".used", (month_ago, month_ago))
    (other_version / ".used").touch()
    embedding.recipe_dir(str(installs[0]))
    left = sorted(p.name for p in cache.iterdir())
    assert left == sorted(["keys", other_version.name, elsewhere.name]), left  # recent, or another model's
    assert embedding.cache_size() == (200, 2)
