"""Index lifecycle: incremental builds, --check, live swaps, crash safety, ingest over HTTP."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from indexer.index.engine import open_engine
from indexer.index.build import build_from_folder
from indexer.settings import Settings
from service.app import create_app
from tests.conftest import (ARTICLES, ROOT, SEED_FILE, cached_rows, indexed_passages, segment_file, semsearch,
                            start_server, stop_server, write_seeds)

SCHOOL = ("School Lunches Go Free\nEvery primary school pupil will get a free hot lunch from September.\n"
          "Parents said the scheme would save families hundreds of pounds a year.\n")


def doc_ids(hits_json):
    return {r["doc_id"] for r in hits_json["results"]}


def test_second_build_embeds_nothing_and_changes_embed_only_what_changed(tmp_path, embedder, engine_kind):
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    engine = open_engine(index, embedder.name, embedder.dimension, engine_kind)
    first = build_from_folder(seeds, index, embedder, progress=False, engine=engine)
    assert len(first.changes.added) == 3 and first.passages_embedded == first.passages == 6

    again = build_from_folder(seeds, index, embedder, progress=False, engine=engine)
    assert again.generation is None and again.passages_embedded == 0 and again.changes.unchanged == 3
    assert engine.current() == first.generation.name

    (seeds / "rail.txt").write_text(ARTICLES["rail.txt"].replace("six percent", "seven percent"))
    (seeds / "dam.txt").unlink()
    (seeds / "school.txt").write_text(SCHOOL)
    third = build_from_folder(seeds, index, embedder, progress=False, engine=engine)
    c = third.changes
    assert (c.added, c.changed, c.removed, c.unchanged) == (("school",), ("rail",), ("dam",), 1)
    assert third.passages_embedded == 3  # two school passages and the one edited rail paragraph
    total, page = engine.reader().document_ids(0, 10)
    assert total == 3 and {doc_id for doc_id, *_ in page} == {"harbour", "rail", "school"}
    engine.close()


def test_a_rebuild_chunks_only_changed_documents_and_equals_a_full_build(tmp_path, embedder, monkeypatch):
    from indexer.index import build

    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    build_from_folder(seeds, index, embedder, progress=False)
    (seeds / "rail.txt").write_text(ARTICLES["rail.txt"].replace("six", "seven"))
    chunked = []
    real_chunk = build.chunk_document
    monkeypatch.setattr(build, "chunk_document", lambda document, *args: chunked.append(document.doc_id)
                        or real_chunk(document, *args))
    build_from_folder(seeds, index, embedder, progress=False)
    assert chunked == ["rail"]  # harbour and dam stay in the segment they are in
    fresh = tmp_path / "fresh"
    build_from_folder(seeds, fresh, embedder, progress=False)
    assert sorted(chunked) == ["dam", "harbour", "rail", "rail"]
    assert indexed_passages(index, embedder) == indexed_passages(fresh, embedder)


def keyword_scores(engine, embedder, query: str) -> list[tuple[str, int, float]]:
    from indexer.search.searcher import Query, Searcher

    hits = Searcher(engine.reader(), embedder).search(Query(query, k=20, mode="keyword", min_relevance=0))
    return sorted((round(h.keyword.score, 4), h.passage.doc_id, h.passage.paragraph) for h in hits)


def test_counts_and_keyword_scores_stay_right_through_every_kind_of_reindex(tmp_path, embedder, engine_kind):
    """Change, remove and add files over several reindexes: after each, the counts the index keeps
    (show, --check, /readyz) are what it holds, and the keyword scores are a fresh build's."""
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    steps = [lambda: (seeds / "rail.txt").write_text(ARTICLES["rail.txt"] + "Fares rise in the spring.\n"),
             lambda: (seeds / "dam.txt").unlink(),
             lambda: (seeds / "school.txt").write_text(SCHOOL),
             lambda: ((seeds / "harbour.txt").write_text(ARTICLES["harbour.txt"].replace("cranes", "harbour cranes")),
                      (seeds / "rail.txt").unlink(), (seeds / "dam.txt").write_text(ARTICLES["dam.txt"]))]
    engine = open_engine(index, embedder.name, embedder.dimension, engine_kind)
    build_from_folder(seeds, index, embedder, progress=False, engine=engine)
    for number, step in enumerate(steps):
        step()
        build_from_folder(seeds, index, embedder, progress=False, engine=engine)
        fresh = open_engine(tmp_path / f"fresh{number}", embedder.name, embedder.dimension, engine_kind)
        build_from_folder(seeds, tmp_path / f"fresh{number}", embedder, progress=False, engine=fresh)
        expected = {k: getattr(fresh.writer().health(), k) for k in ("documents", "passages", "sentences")}
        assert {k: getattr(engine.writer().health(), k) for k in expected} == expected, number
        assert engine.reader().document_ids(0, 10)[0] == expected["documents"] == len(list(seeds.iterdir()))
        for query in ("harbour cranes", "strike pay offer", "school lunch"):
            assert keyword_scores(engine, embedder, query) == keyword_scores(fresh, embedder, query), (number, query)
        fresh.close()
        engine.close()  # the checks below open the index in other processes (Milvus Lite: one at a time)
        checked = semsearch("index", str(seeds), "--out", str(index), "--check")
        assert checked.returncode == 0 and f"({expected['documents']} documents)" in checked.stdout, checked.stderr
        listed = semsearch("show", "--index", str(index))
        assert len(listed.stdout.splitlines()) == expected["documents"]
        with TestClient(create_app(Settings(index_dir=index, reload_interval=0))) as client:
            ready = client.get("/readyz").json()
        assert (ready["documents"], ready["passages"]) == (expected["documents"], expected["passages"])
        engine = open_engine(index, embedder.name, embedder.dimension, engine_kind)
    engine.close()


def test_index_check_names_stale_documents(tmp_path, embedder, engine_kind):
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    engine = open_engine(index, embedder.name, embedder.dimension, engine_kind)
    build_from_folder(seeds, index, embedder, progress=False, engine=engine)
    engine.close()  # the command below opens the index in another process (Milvus Lite: one at a time)
    fresh = semsearch("index", str(seeds), "--out", str(index), "--check")
    assert fresh.returncode == 0 and "up to date" in fresh.stdout
    (seeds / "harbour.txt").write_text(ARTICLES["harbour.txt"] + "The ferry returns next week.\n")
    (seeds / "dam.txt").unlink()
    stale = semsearch("index", str(seeds), "--out", str(index), "--check")
    assert stale.returncode == 1
    assert "changed: harbour" in stale.stdout and "removed: dam" in stale.stdout


def query_continuously(url, query, stop, statuses, seen):
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            response = client.get("/search", params={"q": query, "k": 3})
            statuses.append(response.status_code)
            if response.status_code == 200:
                seen.append(doc_ids(response.json()))


@contextmanager
def serving(index, engine_kind):
    """The service on index while a build in this process publishes: `semsearch serve` in its own
    process on a FAISS folder; on Milvus Lite, which serves one process at a time, uvicorn in a
    thread of this one (the build and the service then share its client, as two processes share a
    Milvus server). Yields the base URL."""
    if engine_kind == "faiss":
        process, url = start_server(index)
        try:
            yield url
        finally:
            stop_server(process)
        return
    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(index_dir=index)), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.1)
    assert server.started and httpx.get(url + "/readyz", timeout=10).status_code == 200
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_running_server_switches_to_a_new_generation_without_failing_a_request(tmp_path, embedder, engine_kind):
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    engine = open_engine(index, embedder.name, embedder.dimension, engine_kind)
    build_from_folder(seeds, index, embedder, progress=False, engine=engine)
    stop, statuses, seen = threading.Event(), [], []
    with serving(index, engine_kind) as url:
        clients = [threading.Thread(target=query_continuously, args=(url, "free school lunches", stop, statuses, seen))
                   for _ in range(4)]
        try:
            for client in clients:
                client.start()
            time.sleep(1.5)
            (seeds / "school.txt").write_text(SCHOOL)
            build_from_folder(seeds, index, embedder, progress=False, engine=engine)  # as `semsearch index` does
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (seen and "school" in seen[-1]):
                time.sleep(0.2)
            time.sleep(1)
        finally:
            stop.set()
            for client in clients:
                client.join()
    assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200][:5]}"
    assert "school" not in seen[0] and "school" in seen[-1]


def served_state(index, model) -> dict:
    """The index's newest published snapshot as its engine reports it (generation, counts); the
    engine is closed after, so another process can open a Milvus Lite file."""
    engine = open_engine(index, model.name, model.dimension)
    try:
        return engine.writer().health().record()
    finally:
        engine.close()


@pytest.mark.slow  # embeds 1,300 passages with the real model: 30-40 s an engine
def test_killed_build_leaves_the_served_index_intact_and_the_next_build_succeeds(tmp_path, embedder, engine_kind):
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    build_from_folder(seeds, index, embedder, progress=False,
                      engine=open_engine(index, embedder.name, embedder.dimension, engine_kind))
    before = served_state(index, embedder)
    body = SEED_FILE.read_text(encoding="utf-8")
    for n in range(100):  # 1,200 passages: the build writes its first 1,024 vectors to its cache
        (seeds / f"copy{n}.txt").write_text(f"Edition {n} Of The War Report\n{body}")
    # Milvus Lite serves one process at a time: there the server starts after the kill, on what is left.
    serving = start_server(index) if engine_kind == "faiss" else None
    try:
        build = subprocess.Popen([sys.executable, "-m", "indexer.cli", "index", str(seeds), "--out", str(index)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while cached_rows(index) == 0 and build.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert build.poll() is None, "the build finished before it could be killed mid-way"
        os.kill(build.pid, signal.SIGKILL)  # mid-way: vectors in the cache, nothing published
        build.wait()
        assert served_state(index, embedder) == before
        if serving is None:
            serving = start_server(index)
        url = serving[1]
        answer = httpx.get(url + "/search", params={"q": "harbour repairs", "k": 1}, timeout=10)
        assert answer.status_code == 200 and answer.json()["results"][0]["doc_id"] == "harbour"
        assert httpx.get(url + "/readyz", timeout=5).json()["generation"] == before["generation"]
    finally:
        if serving is not None:
            stop_server(serving[0])
    cached = cached_rows(index)
    assert cached >= 1024
    rebuilt = semsearch("index", str(seeds), "--out", str(index))
    assert rebuilt.returncode == 0, rebuilt.stderr
    embedded = re.search(r"embedded (\d+) of (\d+) passages", rebuilt.stdout)
    # Only what neither the served index nor the killed build's cache holds is embedded again.
    assert embedded and int(embedded.group(1)) == int(embedded.group(2)) - before["passages"] - cached
    after = served_state(index, embedder)
    assert after["generation"] != before["generation"] and after["documents"] == 103
    assert not list(index.glob(".building-*"))


@pytest.fixture()
def ingest_settings(tmp_path, embedder, engine_kind):
    seeds, index = write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index"
    build_from_folder(seeds, index, embedder, progress=False,
                      engine=open_engine(index, embedder.name, embedder.dimension, engine_kind))
    return Settings(index_dir=index, api_key="s3cret", reload_interval=0), seeds


def test_a_damaged_embedding_cache_is_set_aside_and_never_fails_a_write(ingest_settings, embedder):
    """The cache is derived data: --check reports it, index and ingest set it aside and go on."""
    settings, seeds = ingest_settings
    open_engine(settings.index_dir, embedder.name, embedder.dimension).close()  # Milvus Lite: one process at a time
    cache = settings.index_dir / "embeddings.sqlite"
    cache.write_bytes(b"this is not a SQLite file " * 100)
    checked = semsearch("index", str(seeds), "--out", str(settings.index_dir), "--check")
    assert checked.returncode == 0 and "embedding cache" in checked.stderr and "is damaged" in checked.stderr
    doc = {"documents": [{"id": "ferry", "title": "Ferry", "text": "The island ferry runs again from Monday."}]}
    with TestClient(create_app(settings)) as client:
        response = client.post("/documents", json=doc, headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200, response.text
        assert client.get("/search", params={"q": "island ferry", "min_relevance": 0}).json()["results"][0]["doc_id"] \
            == "ferry"
    assert [p.name.split("-")[0] for p in settings.index_dir.glob("embeddings.sqlite.damaged-*")] == [
        "embeddings.sqlite.damaged"]  # set aside, named
    cache.write_bytes(b"garbage again " * 100)
    (seeds / "rail.txt").write_text(ARTICLES["rail.txt"] + "Fares rise in the spring.\n")
    built = semsearch("index", str(seeds), "--out", str(settings.index_dir))
    assert built.returncode == 0 and "set aside as embeddings.sqlite.damaged-" in built.stderr, built.stderr
    assert "changed 1" in built.stdout


def test_ingest_is_disabled_without_a_key_and_refused_with_a_wrong_one(ingest_settings):
    settings, _ = ingest_settings
    doc = {"documents": [{"id": "x1", "text": "Some text."}]}
    with TestClient(create_app(dataclasses.replace(settings, api_key=None))) as client:
        response = client.post("/documents", json=doc, headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "disabled"
    with TestClient(create_app(settings)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.post("/documents", json=doc, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        response = client.post("/documents", headers={"Authorization": "Bearer s3cret"},
                               json={"documents": [{"id": "x1", "text": "   "}]})
        assert response.status_code == 422 and response.json()["error"]["field"] == "documents.0.text"


def test_ingested_documents_are_searchable_durable_and_survive_a_folder_reindex(ingest_settings, embedder):
    settings, seeds = ingest_settings
    auth = {"Authorization": "Bearer s3cret"}
    school = {"id": "school-1", "title": "School Lunches Go Free", "url": "https://news.example/school",
              "text": SCHOOL.split("\n", 1)[1]}
    note = {"id": "note-1", "text": "Ferry service to the outer islands resumes"}  # one line, no title
    with TestClient(create_app(settings)) as client:
        added = client.post("/documents", json={"documents": [school, note]}, headers=auth)
        assert added.status_code == 200 and added.json()["searchable"] is True
        found = client.get("/search", params={"q": "free school lunch", "k": 1}).json()["results"][0]
        assert found["doc_id"] == "school-1" and found["source"] == "https://news.example/school"
        found = client.get("/search", params={"q": "ferry to the islands", "k": 1}).json()["results"][0]
        assert found["doc_id"] == "note-1" and found["text"] == note["text"]
    with TestClient(create_app(settings)) as restarted:  # a restart keeps it
        assert "school-1" in doc_ids(restarted.get("/search", params={"q": "school lunch", "k": 3}).json())
    (seeds / "dam.txt").unlink()
    build_from_folder(seeds, settings.index_dir, embedder, progress=False)  # a folder reindex
    with TestClient(create_app(settings)) as client:
        ids = doc_ids(client.get("/search", params={"q": "school lunch dam", "k": 10}).json())
        assert "school-1" in ids and "dam" not in ids
        assert client.delete("/documents/school-1", headers=auth).status_code == 200
        assert "school-1" not in doc_ids(client.get("/search", params={"q": "school lunch", "k": 10}).json())
        missing = client.delete("/documents/school-1", headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        from_folder = client.delete("/documents/harbour", headers=auth).json()["error"]["message"]
        assert "indexed from a folder (seeds/harbour.txt)" in from_folder and "semsearch index" in from_folder


def test_a_truncated_vectors_file_is_reported_by_the_cli_and_the_service_log(index_copy, caplog):
    vectors = segment_file(index_copy, "vectors.npy")
    vectors.write_bytes(vectors.read_bytes()[:64])
    result = semsearch("search", "war", "--index", str(index_copy))
    assert result.returncode == 2 and "vectors.npy" in result.stderr and "corrupt" in result.stderr
    with caplog.at_level(logging.ERROR, logger="semsearch.service"):
        with TestClient(create_app(Settings(index_dir=index_copy, reload_interval=0))) as client:
            assert "vectors.npy" in client.get("/readyz").json()["error"]["message"]
    assert "vectors.npy" in caplog.text and "corrupt" in caplog.text


def test_an_ingest_committed_but_not_yet_switched_to_answers_200_and_becomes_searchable(ingest_settings):
    settings, _ = ingest_settings
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.runtime.engine
        opening = engine.reader

        def fails_once():
            engine.reader = opening
            raise SystemError("AST constructor recursion depth mismatch")  # what CPython 3.11 threw here
        engine.reader = fails_once
        added = client.post("/documents", json={"documents": [{"id": "ferry", "text": "Ferry to the islands resumes"}]},
                            headers=auth)
        assert added.status_code == 200 and added.json()["searchable"] is False  # durable, not yet served
        client.app.state.runtime.reload()  # what the watcher does on its next look
        found = client.get("/search", params={"q": "ferry to the islands", "k": 1}).json()["results"]
        assert found[0]["doc_id"] == "ferry"
