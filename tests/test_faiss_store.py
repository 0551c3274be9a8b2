"""The on-disk index: round trip against a brute-force numpy oracle, integrity checks, atomic swap."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import httpx

import numpy as np
import pytest

from indexer.engines.faiss import segment, store
from indexer.index.build import build_from_documents, build_from_folder
from indexer.text.chunking import chunk_document, embedding_input, sentence_spans
from indexer.text.documents import Document, read_folder
from indexer.errors import program
from tests.conftest import ARTICLES, SEED_FILE, SEEDS, STAND_IN, searched, segment_file, semsearch, served, write_seeds


@pytest.fixture(scope="module")
def sentence_corpus():
    """Every sentence of the seed article as its own small document: real text, many rows."""
    article = next(read_folder(SEEDS))
    return [Document(doc_id=f"s{i}", title="", source=f"seed-sentence-{i}", text=article.text[s:e])
            for i, (s, e) in enumerate(sentence_spans(article.text))]


def test_round_trip_matches_brute_force_numpy_search(tmp_path, embedder, sentence_corpus):
    build_from_documents(sentence_corpus, tmp_path, embedder, progress=False)
    loaded = store.load(tmp_path, embedder.name, embedder.dimension)
    expected = [p for d in sentence_corpus for p in chunk_document(d, embedder.token_spans, embedder.max_tokens)]
    ids = loaded.all_ids()
    stored = loaded.fetch(ids.tolist())
    assert [stored[i].passage for i in ids] == expected  # ids follow the build order
    oracle = embedder.embed([embedding_input(p)[0] for p in expected], progress=False)
    segment = loaded.views[0].segment
    np.testing.assert_allclose(np.asarray(segment.dense.vectors), oracle, atol=1e-5)

    for query in ["casualties of the war", "NATO membership", "drone production", "peace proposal"]:
        vector = embedder.embed_query(query)
        brute = ids[np.argsort(-(oracle @ vector), kind="stable")[:10]]
        found = [passage_id for passage_id, _ in loaded.dense(vector, 10)]
        assert found == brute.tolist()


def test_manifest_records_format_model_counts_segments_and_checksums(faiss_seed_index):
    seed_index = faiss_seed_index
    generation = store.current_generation(seed_index)
    manifest = json.loads((seed_index / generation / "manifest.json").read_text())
    assert manifest["format_version"] == store.FORMAT_VERSION
    assert manifest["model"] == {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384}
    assert manifest["passages"] == 12 and manifest["documents"] == 1 and manifest["next_id"] == 13
    [entry] = manifest["segments"]
    folder = seed_index / store.SEGMENTS / entry["name"]
    assert store.sha256_of(folder / "segment.json") == entry["info_sha256"]
    info = json.loads((folder / "segment.json").read_text())
    assert {"vectors.npy", "sentence_vectors.npy", "segment.sqlite", "postings_rows.npy"} <= set(info["files"])
    for relative, digest in info["files"].items():
        assert store.sha256_of(folder / relative) == digest


def test_missing_index_names_the_command_that_builds_it(tmp_path, embedder):
    with pytest.raises(store.IndexUnavailable) as caught:
        store.load(tmp_path / "nowhere", embedder.name, embedder.dimension)
    assert "no index found" in caught.value.message
    assert caught.value.fix.startswith(f"{shlex.join(program())} index")


def test_truncated_vectors_file_is_reported_as_corrupt(index_copy, embedder):
    vectors = segment_file(index_copy, "vectors.npy")
    vectors.write_bytes(vectors.read_bytes()[:100])
    with pytest.raises(store.IndexUnavailable) as caught:
        store.load(index_copy, embedder.name, embedder.dimension)
    assert "vectors.npy" in caught.value.message and "corrupt" in caught.value.message


def test_index_built_with_another_model_is_refused(index_copy, embedder):
    with pytest.raises(store.IndexUnavailable) as caught:
        store.load(index_copy, "intfloat/e5-small", embedder.dimension)
    assert "all-MiniLM-L6-v2" in caught.value.message and "intfloat/e5-small" in caught.value.message


def test_failed_build_leaves_the_index_in_use_untouched(index_copy, embedder, sentence_corpus, monkeypatch):
    before = store.current_generation(index_copy)

    def broken_save(folder, db, found):
        raise OSError("disk full")

    monkeypatch.setattr(segment, "save_postings", broken_save)
    with pytest.raises(OSError):
        build_from_documents(sentence_corpus, index_copy, embedder, progress=False)
    assert store.current_generation(index_copy) == before
    assert not any(p.name.startswith(".building") for p in index_copy.iterdir())
    assert store.load(index_copy, embedder.name, embedder.dimension).info.passages == 12


def test_new_build_switches_pointer_and_keeps_only_recent_generations(index_copy, embedder, sentence_corpus):
    for size in range(1, store.KEEP_GENERATIONS + 2):
        build_from_documents(sentence_corpus[:size], index_copy, embedder, progress=False)
    generations = [p for p in index_copy.iterdir() if p.name.startswith("gen-")]
    assert len(generations) == store.KEEP_GENERATIONS
    assert store.current_generation(index_copy) == max(p.name for p in generations)
    assert store.load(index_copy, embedder.name, embedder.dimension).info.passages == 4
    used = {s["name"] for g in generations for s in store.read_manifest(index_copy, g.name)["segments"]}
    assert {p.name for p in (index_copy / store.SEGMENTS).iterdir()} == used  # unused segments removed


def test_a_reindex_rebuilds_when_the_way_passages_are_cut_or_scored_changed(tmp_path):
    from indexer.engines.faiss import store
    from tests.conftest import STAND_IN

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED_FILE, seeds / SEED_FILE.name)
    index = tmp_path / "index"
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0
    manifest = index / store.current_generation(index) / "manifest.json"
    recorded = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**recorded, "chunker": "an-older-chunker"}))  # as an older version left it
    again = semsearch("index", str(seeds), "--out", str(index), env=STAND_IN)
    assert again.returncode == 0 and "indexed 1 document," in again.stdout, again.stdout
    assert store.read_manifest(index)["chunker"] == recorded["chunker"]


def test_the_fingerprint_reads_code_and_not_its_comments_or_docstrings(tmp_path):
    from indexer.index.build import code_of
    from indexer.text import chunking

    source = Path(chunking.__file__).read_text(encoding="utf-8")
    reworded, changed = tmp_path / "reworded.py", tmp_path / "changed.py"
    # what an edit of the docs alone does: the module's docstring, a function's, comments, blank lines
    docs = re.sub(r'\n    """(?=\w)', '\n    """Reworded. ', source, count=1)  # the first function's docstring
    reworded.write_text(docs.replace('"""', '"""Reworded. ', 1).replace("\n\n\n", "\n\n\n# a new comment\n\n\n", 1)
                        .replace("    return", "    # a remark\n\n    return", 1), encoding="utf-8")
    changed.write_text(source.replace("    return", "    pass\n    return", 1), encoding="utf-8")
    assert reworded.read_text(encoding="utf-8") != source
    assert code_of(reworded) == code_of(Path(chunking.__file__))
    assert code_of(changed) != code_of(Path(chunking.__file__))


def test_old_generations_are_cleaned_up_but_never_the_current_one(tmp_path, embedder):
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    for n in range(5):
        (seeds / "extra.txt").write_text(f"Extra Edition\nThis is edition number {n} of the extra.\n")
        build_from_folder(seeds, index, embedder, progress=False)
    generations = sorted(p.name for p in index.iterdir() if p.name.startswith("gen-"))
    assert len(generations) == store.KEEP_GENERATIONS
    assert store.current_generation(index) == generations[-1]


def without_metadata_column(index) -> None:
    """Make the index's segments look as written before metadata existed (no such column, no
    near-duplicate signatures),
    checksums and manifest updated to match, as an older version would have left them."""
    import sqlite3

    from indexer.engines.faiss import store
    from indexer.engines.faiss.integrity import checksums, sha256_of

    name = store.current_generation(index)
    manifest_path = index / name / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["segments"]:
        folder = index / store.SEGMENTS / entry["name"]
        with sqlite3.connect(folder / "segment.sqlite") as db:
            db.execute("ALTER TABLE documents DROP COLUMN metadata")
        db.close()
        (folder / "minhashes.npy").unlink()  # near-duplicate signatures came later still
        info = json.loads((folder / "segment.json").read_text())
        info["files"] = {k: v for k, v in checksums(folder).items() if k != "segment.json"}
        (folder / "segment.json").write_text(json.dumps(info, indent=1))
        entry["info_sha256"] = sha256_of(folder / "segment.json")
    manifest_path.write_text(json.dumps(manifest))


def test_an_index_from_before_metadata_still_searches_ingests_and_merges(faiss_folder_index):
    seeds, index = faiss_folder_index
    without_metadata_column(index)
    assert semsearch("index", str(seeds), "--check", "--out", str(index), env=STAND_IN).returncode == 0
    assert searched("harbour", index)["harbour"]["published_at"] is None
    headers = {"Authorization": "Bearer k"}
    with served(index, {**STAND_IN, "SEMSEARCH_API_KEY": "k"}) as (_, url):
        for n in range(6):  # enough small segments for the merger to fold old and new together
            answer = httpx.post(f"{url}/documents", headers=headers, timeout=60, json={"documents": [
                {"id": f"note-{n}", "text": f"Note {n} about the harbour crane.", "outlet": "Port Log"}]})
            assert answer.status_code == 200, answer.text
        hits = httpx.get(f"{url}/search", params={"q": "harbour crane note", "k": 20}, timeout=30).json()["results"]
        outlets = {r["doc_id"]: r["outlet"] for r in hits}
        assert outlets["harbour"] is None and all(outlets[f"note-{n}"] == "Port Log" for n in range(6))
        deadline = time.monotonic() + 60
        while len(store.read_manifest(index)["segments"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(store.read_manifest(index)["segments"]) == 1  # the old segment merged with the new ones
        hits = httpx.get(f"{url}/search", params={"q": "harbour crane note", "k": 20}, timeout=30).json()["results"]
        assert {r["doc_id"]: r["outlet"] for r in hits} == outlets
        collapsed = httpx.get(f"{url}/search", params={"q": "harbour crane note", "k": 20, "collapse": "story"},
                              timeout=30).json()["results"]  # signatures of the old rows made by the merge
        assert {r["doc_id"] for r in collapsed} == set(outlets) and all(r["also_in"] == [] for r in collapsed)
    rebuilt = semsearch("index", str(seeds), "--out", str(index), "--force", env=STAND_IN)
    assert rebuilt.returncode == 0, rebuilt.stderr  # ingested documents come back with their metadata
    assert searched("harbour crane note", index, k=20)["note-3"]["outlet"] == "Port Log"


def test_top_is_stable_for_ties():
    import numpy as np

    from indexer.engines.faiss.dense import top

    rows, scores = top(np.array([7, 3, 5, 4]), np.array([0.5, 0.9, 0.5, 0.5]), 3)
    assert rows.tolist() == [3, 4, 5] and scores.tolist() == [0.9, 0.5, 0.5]


def test_a_new_write_removes_what_killed_writers_left_but_never_a_running_writers_folder(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])  # a writer that has ended: its pid runs nothing
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        left = tmp_path / f".building-seg-old-{dead.pid}"
        running = tmp_path / f".building-seg-busy-{alive.pid}"
        mine = tmp_path / f".building-seg-mine-{os.getpid()}"
        for folder in (left, running, mine):
            (folder / "seg").mkdir(parents=True)
        staging = store.new_staging(tmp_path, "seg-new")
        assert staging.is_dir() and running.is_dir() and mine.is_dir()
        assert not left.exists()
    finally:
        alive.kill()
        alive.wait()
