"""Segments, tombstones, corpus-wide BM25, approximate search and merges, on the stand-in encoder
(the machinery is under test here, not the model's ranking)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from indexer.engines.faiss import store
from indexer.index.build import build_from_documents, update_documents
from indexer.engines.faiss.dense import DenseParams
from indexer.engines.faiss.engine import FaissEngine
from indexer.text.documents import Document
from indexer.model.hashing_encoder import HashingEncoder
from indexer.text.keyword import passage_terms
from indexer.engines.faiss.merge import MergePolicy, merge_all
from indexer.search.searcher import Query, Searcher
from indexer.engines.faiss.writer import SegmentStore
from tests.conftest import ROOT, make_corpus, searcher_of

QUERIES = ["casualties of the war", "drone production in Ukraine", "Putin and the Kremlin", "peace talks"]
MODES = ("hybrid", "dense", "keyword")


@pytest.fixture(scope="module")
def model() -> HashingEncoder:
    return HashingEncoder()


def rankings(index_dir, model, **query) -> dict:
    """(query, mode) -> [(passage_id, score)] for every query and mode."""
    searcher = searcher_of(index_dir, model)
    return {(q, mode): [(h.passage.passage_id, round(h.score, 5)) for h in searcher.search(Query(q, k=20, mode=mode,
                                                                                                   **query))]
            for q in QUERIES for mode in MODES}


def keyword_scores(index_dir, model, query: str) -> dict[str, float]:
    loaded = store.load(index_dir, model.name, model.dimension)
    found = loaded.keyword(Searcher(loaded, model).analyzer.terms(query), 10_000)
    passages = loaded.fetch([i for i, _ in found])
    return {passages[i].passage.passage_id: score for i, score in found}


@pytest.fixture()
def grown(tmp_path, model):
    """An index grown in steps: a build, two ingests, a replacement and a deletion (four segments)."""
    corpus = make_corpus(160)
    build_from_documents(corpus[:100], tmp_path, model, progress=False)
    update_documents(tmp_path, model, corpus[100:130], [])
    update_documents(tmp_path, model, corpus[130:160], [])
    replaced = Document("d7", "Harbour Reopens", "https://news.example/harbour", "The harbour reopened on Monday.")
    update_documents(tmp_path, model, [replaced], ["d8", "d120"])
    live = [replaced if d.doc_id == "d7" else d for d in corpus if d.doc_id not in ("d8", "d120")]
    return tmp_path, corpus, live


def test_stand_in_encoder_is_deterministic_across_processes_and_never_the_default(model, tmp_path):
    from indexer.model.embedding import light_model_for

    texts = ["The harbour reopened.", "Drone production rose sharply."]
    script = ("import json; from indexer.model.hashing_encoder import HashingEncoder; "
              f"print(json.dumps(HashingEncoder().embed({texts!r}).tolist()))")
    other = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert np.array_equal(np.array(json.loads(other.stdout), dtype=np.float32), model.embed(texts))
    assert model.embed(texts).shape == (2, 384)
    assert light_model_for("hashing").name == "hashing" and light_model_for(None).name != "hashing"
    build_from_documents(make_corpus(3), tmp_path, model, progress=False)
    assert store.read_manifest(tmp_path)["model"] == {"name": "hashing", "dimension": 384}
    with pytest.raises(store.IndexUnavailable, match="built with model hashing"):
        store.load(tmp_path, "sentence-transformers/all-MiniLM-L6-v2", 384)


def test_deleted_and_replaced_documents_never_appear_in_any_mode_or_filter(grown, model):
    index_dir, corpus, _ = grown
    assert len(store.read_manifest(index_dir)["segments"]) == 4
    for query in ({}, {"exact": True}, {"sources": tuple(f"https://news.example/{n % 7}/{n}" for n in (7, 8, 9))}):
        for (q, mode), hits in rankings(index_dir, model, **query).items():
            ids = {passage_id.split("#")[0] for passage_id, _ in hits}
            assert not ids & {"d8", "d120"}, (q, mode, query)
    searcher = searcher_of(index_dir, model)
    old_words = corpus[7].text.split(".")[0]
    old = searcher.search(Query(old_words, k=50, doc_ids=("d7",)))
    assert [h.passage.text for h in old] == ["The harbour reopened on Monday."]  # only the new version
    assert searcher.search(Query("war", doc_ids=("d8", "d120"))) == []


def test_bm25_over_segments_equals_a_from_scratch_build_and_bm25s(grown, model, tmp_path_factory):
    index_dir, _, live = grown
    scratch = tmp_path_factory.mktemp("scratch")
    build_from_documents(live, scratch, model, progress=False)
    for query in QUERIES:
        grown_scores, fresh_scores = keyword_scores(index_dir, model, query), keyword_scores(scratch, model, query)
        assert grown_scores.keys() == fresh_scores.keys()
        for passage_id, score in fresh_scores.items():
            assert grown_scores[passage_id] == pytest.approx(score, rel=1e-6)
    # bm25s, which the keyword index used to be, as the oracle over the same passages' terms
    from indexer.text import keyword

    loaded = store.load(scratch, model.name, model.dimension)
    passages = loaded.fetch(loaded.all_ids().tolist())
    ordered = [passages[i].passage for i in sorted(passages)]
    retriever = keyword.bm25s_module().BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(passage_terms(ordered), show_progress=False)
    for query in QUERIES:
        terms = keyword.Analyzer().terms(query)
        oracle = keyword.scores(retriever, terms)
        ours = keyword_scores(scratch, model, query)
        expected = {p.passage_id: float(s) for p, s in zip(ordered, oracle) if s > 0}
        assert ours.keys() == expected.keys()
        for passage_id, score in expected.items():
            assert ours[passage_id] == pytest.approx(score, rel=1e-4)


def test_a_merge_drops_deleted_rows_and_every_passage_scores_the_same(grown, model):
    index_dir, _, live = grown
    before = rankings(index_dir, model)
    results = merge_all(SegmentStore(index_dir, model.name, model.dimension), MergePolicy(factor=4))
    assert results and results[0].rows == store.read_manifest(index_dir)["passages"]
    manifest = store.read_manifest(index_dir)
    assert len(manifest["segments"]) == 1 and manifest["segments"][0]["deleted"] == 0
    assert manifest["documents"] == len(live)
    assert rankings(index_dir, model) == before


def test_approximate_index_finds_what_exact_search_finds(tmp_path, model):
    engine = FaissEngine(tmp_path, model.name, model.dimension, ann_min_rows=1_000)
    build_from_documents(make_corpus(1_500), tmp_path, model, progress=False, engine=engine)
    loaded = store.load(tmp_path, model.name, model.dimension)
    [view] = loaded.views
    assert view.segment.info["ann"]["kind"] == "ivf-sq8" and len(view.segment) >= 1_000
    vectors = np.asarray(view.segment.dense.vectors)
    rng = np.random.default_rng(3)
    recalls = []
    for row in rng.choice(len(vectors), 40, replace=False):
        query = vectors[row] + rng.normal(0, 0.05, vectors.shape[1]).astype(np.float32)
        query /= np.linalg.norm(query)
        exact = [i for i, _ in loaded.dense(query, 10, exact=True)]
        brute = view.segment.ids[np.lexsort((np.arange(len(vectors)), -(vectors @ query)))[:10]]
        assert exact == brute.tolist()  # exact=true is brute force
        approximate = [i for i, _ in loaded.dense(query, 10)]
        recalls.append(len(set(exact) & set(approximate)) / 10)
    assert np.mean(recalls) >= 0.9


def test_filters_on_an_approximate_segment_return_only_matching_passages(tmp_path, model):
    dense = DenseParams(ann_min_rows=1_000, brute_force_rows=10)  # large filters go through FAISS selectors
    build_from_documents(make_corpus(1_200), tmp_path, model, progress=False,
                         engine=FaissEngine(tmp_path, model.name, model.dimension, dense))
    searcher = Searcher(store.load(tmp_path, model.name, model.dimension, params=dense), model)
    wide = tuple(f"d{n}" for n in range(0, 1_200, 3))
    for mode in MODES:
        hits = searcher.search(Query("casualties of the war", k=30, mode=mode, doc_ids=wide))
        assert hits and {h.passage.doc_id for h in hits} <= set(wide)
        one = searcher.search(Query("casualties of the war", k=30, mode=mode, sources=("https://news.example/3/10",)))
        assert one and {h.passage.doc_id for h in one} == {"d10"}


def test_ingests_and_background_merges_under_concurrent_searches_fail_no_request(tmp_path, model):
    import time

    import httpx

    from tests.conftest import post_each, searching, start_server, stop_server

    corpus = make_corpus(60)
    build_from_documents(corpus[:40], tmp_path, model, progress=False)
    process, url = start_server(tmp_path, {"SEMSEARCH_MODEL_PATH": "hashing", "SEMSEARCH_API_KEY": "k",
                                           "SEMSEARCH_RELOAD_INTERVAL": "0.2"})
    try:
        with searching(url, clients=4) as statuses, \
                httpx.Client(base_url=url, timeout=60, headers={"Authorization": "Bearer k"}) as writer:
            try:
                post_each(writer, corpus[40:])  # one small segment each: enough for merges to cascade
            except AssertionError as refused:  # with what the server said of it
                raise AssertionError(f"{refused}\n{open(process.log_path).read()[-3000:]}") from None
            assert writer.delete("/documents/d45").status_code == 200
            segments = None
            for _ in range(100):  # merges run in the background: wait for them to settle
                ready = httpx.get(url + "/readyz", timeout=5).json()
                if ready["segments"] == segments:
                    break
                segments = ready["segments"]
                time.sleep(0.5)
    finally:
        log = open(process.log_path).read()
        stop_server(process)
    assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200][:5]}"
    assert "merged" in log and ready["segments"] < 10  # 21 writes left far fewer segments
    assert ready["documents"] == 59 and ready["passages"] == store.read_manifest(tmp_path)["passages"]
    searcher = searcher_of(tmp_path, model)
    for document in corpus[40:]:
        found = {h.passage.doc_id for h in searcher.search(Query(document.text[:80], k=5, doc_ids=(document.doc_id,)))}
        assert found == (set() if document.doc_id == "d45" else {document.doc_id})


def test_sigkill_during_a_merge_loses_nothing(tmp_path, model):
    import os
    import signal
    import time

    corpus = make_corpus(4_000, seed=5)
    build_from_documents(corpus[:1_000], tmp_path, model, progress=False)
    for first in range(1_000, 4_000, 1_000):
        update_documents(tmp_path, model, corpus[first:first + 1_000], ["d3"] if first == 1_000 else [])
    before, generation = rankings(tmp_path, model), store.current_generation(tmp_path)
    merge = ("import sys; from indexer.engines.faiss.dense import DenseParams; from indexer.engines.faiss.merge import MergePolicy, merge_all; "
             "from indexer.engines.faiss.writer import SegmentStore; "
             "merge_all(SegmentStore(sys.argv[1], 'hashing', 384, DenseParams(ann_min_rows=1000)), "
             "MergePolicy(factor=4, floor=100_000))")
    process = subprocess.Popen([sys.executable, "-c", merge, str(tmp_path)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".building-seg-*/*/vectors.npy")):
        time.sleep(0.01)
    assert process.poll() is None, "the merge finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert store.current_generation(tmp_path) == generation
    assert rankings(tmp_path, model) == before  # nothing lost, nothing half-merged
    assert merge_all(SegmentStore(tmp_path, model.name, model.dimension), MergePolicy(factor=4, floor=100_000))
    assert len(store.read_manifest(tmp_path)["segments"]) == 1 and not list(tmp_path.glob(".building-*"))
    assert rankings(tmp_path, model) == before


def test_index_check_over_a_segmented_index(tmp_path):
    from tests.conftest import semsearch

    seeds, index = tmp_path / "seeds", tmp_path / "index"
    seeds.mkdir()
    for document in make_corpus(8):
        (seeds / f"{document.doc_id}.txt").write_text(f"{document.title}\n{document.text}\n")
    env = {"SEMSEARCH_MODEL_PATH": "hashing"}
    assert semsearch("index", str(seeds), "--out", str(index), env=env).returncode == 0
    (seeds / "d2.txt").write_text("Rail Strike Ends\nTrain drivers returned to work after a pay offer.\n")
    (seeds / "d5.txt").unlink()
    changed = semsearch("index", str(seeds), "--out", str(index), env=env)
    assert "added 0, changed 1, removed 1, unchanged 6" in changed.stdout
    assert len(store.read_manifest(index)["segments"]) == 2  # the change went into a new segment
    fresh = semsearch("index", str(seeds), "--out", str(index), "--check", env=env)
    assert fresh.returncode == 0 and "up to date" in fresh.stdout
    (seeds / "d3.txt").write_text("Dam Project Approved\nThe council approved a dam.\n")
    stale = semsearch("index", str(seeds), "--out", str(index), "--check", env=env)
    assert stale.returncode == 1 and "changed: d3" in stale.stdout


def test_a_large_build_writes_several_segments_but_publishes_once(tmp_path, model, monkeypatch):
    from indexer.index import build

    corpus = make_corpus(120)
    whole = tmp_path / "whole"
    build_from_documents(corpus, whole, model, progress=False)
    monkeypatch.setattr(build, "BATCH_PASSAGES", 40)
    batched = tmp_path / "batched"
    summary = build_from_documents(corpus, batched, model, progress=False)
    assert len(store.read_manifest(batched)["segments"]) >= 3
    assert len([p for p in batched.iterdir() if p.name.startswith("gen-")]) == 1  # readers saw one change
    assert summary.passages == store.read_manifest(whole)["passages"]
    assert rankings(batched, model) == rankings(whole, model)


def concatenated(lists):
    """Each term's (rows, tfs) as Segment.postings gives them: (rows, tfs, bounds)."""
    return (np.concatenate([rows for rows, _ in lists]), np.concatenate([tfs for _, tfs in lists]),
            np.cumsum([0] + [len(rows) for rows, _ in lists]))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_bm25_top_rows_equal_brute_force_scoring_with_ties_and_filters(compiled, monkeypatch):
    from indexer.engines.faiss import postings

    monkeypatch.setattr(postings, "COMPILED_FROM", 0 if compiled else 10**9)

    rng = np.random.default_rng(7)
    rows_count = 5_000
    norms = rng.choice([0.9, 1.2, 1.5], rows_count).astype(np.float32)  # few values: many exact ties
    lists = []
    for size in (40, 900, 2_500):
        rows = np.sort(rng.choice(rows_count, size, replace=False)).astype(np.int32)
        lists.append((rows, rng.integers(1, 3, size).astype(np.uint16)))
    weights = [2.5, 0.7, 0.2]
    brute = np.zeros(rows_count, np.float32)  # float32 sums, term after term, as the index adds them
    for (rows, tfs), weight in zip(lists, weights):
        np.add.at(brute, rows, postings.term_scores(tfs, norms[rows], weight))
    for allowed in (None, rng.random(rows_count) < 0.3):
        for depth in (1, 10, 200, 10_000):
            found, scores = postings.best_rows(*concatenated(lists), weights, norms, allowed, depth)
            kept = np.flatnonzero((brute > 0) & (True if allowed is None else allowed))
            order = kept[np.lexsort((kept, -brute[kept]))][:depth]  # best first, lower row wins a tie
            assert found.tolist() == order.tolist()
            assert scores.tolist() == pytest.approx(brute[order].tolist(), rel=1e-12)
    # The reused buffer is clean: the same call again gives the same answer.
    assert postings.best_rows(*concatenated(lists), weights, norms, None, 50)[0].tolist() == \
        postings.best_rows(*concatenated(lists), weights, norms, None, 50)[0].tolist()


def test_keyword_lists_at_any_depth_are_the_head_of_the_full_list(tmp_path, model):
    corpus = make_corpus(400)
    build_from_documents(corpus[:250], tmp_path, model, progress=False)
    update_documents(tmp_path, model, corpus[250:], ["d3", "d30"])
    loaded = store.load(tmp_path, model.name, model.dimension)
    analyzer = Searcher(loaded, model).analyzer
    for query in QUERIES + ["the war in Ukraine and Russia's economy", "Putin Putin Kremlin"]:
        terms = analyzer.terms(query)
        full = loaded.keyword(terms, 100_000)  # deeper than the corpus: nothing can be pruned
        for depth in (1, 5, 20):
            pruned = loaded.keyword(terms, depth)
            assert [i for i, _ in pruned] == [i for i, _ in full[:depth]]
            assert [s for _, s in pruned] == pytest.approx([s for _, s in full[:depth]], rel=1e-9)


def test_hybrid_lists_computed_at_once_on_a_large_index_rank_the_same(grown, model, monkeypatch):
    from indexer.search import searcher as search

    index_dir, _, _ = grown
    serial = rankings(index_dir, model)
    monkeypatch.setattr(search, "PARALLEL_LISTS_FROM", 0)  # as on an index of 200,000 passages or more
    assert rankings(index_dir, model) == serial


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pread"])
def test_rows_read_from_disk_are_the_rows_written_and_a_truncated_file_is_named(compiled, tmp_path, monkeypatch):
    from indexer.engines.faiss import rowfile

    monkeypatch.setattr(rowfile, "COMPILED_READS_FROM", 0 if compiled else 10**9)
    vectors = np.random.default_rng(3).random((5_000, 24), dtype=np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    file = rowfile.RowFile(tmp_path / "vectors.npy")
    rows = np.random.default_rng(4).integers(0, len(vectors), 700)  # repeats, runs and gaps, unsorted
    assert np.array_equal(file.take(rows), vectors[rows])
    starts, counts = np.array([4_990, 0, 17]), np.array([10, 3, 0])
    assert np.array_equal(file.runs(starts, counts), np.concatenate([vectors[4_990:], vectors[:3]]))
    with open(tmp_path / "vectors.npy", "r+b") as handle:  # the disk lost the file's tail
        handle.truncate(file.offset + 4_000 * file.row_bytes)
    with pytest.raises(OSError, match="vectors.npy"):
        file.take(rows)
