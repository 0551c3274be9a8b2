"""Writes are all-or-nothing: a failed or killed ingest changes nothing anyone can observe.

Real server processes on the stand-in encoder (only the write machinery is under test); faults
are real: a file-size limit on the running server (`prlimit --fsize`, what a full disk does to
writes) and SIGKILL in the middle of an ingest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from tests.conftest import STAND_IN, semsearch, served, start_server, stop_server

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}


def found_ids(url: str, query: str) -> set[str]:
    answer = httpx.get(url + "/search", params={"q": query, "k": 50, "mode": "keyword"}, timeout=30)
    assert answer.status_code == 200
    return {hit["doc_id"] for hit in answer.json()["results"]}


def up_to_date(seeds, index) -> bool:
    check = semsearch("index", str(seeds), "--out", str(index), "--check", env=STAND_IN)
    assert check.returncode in (0, 1), check.stderr
    return check.returncode == 0


def fsize(pid: int, limit: str) -> None:
    subprocess.run(["prlimit", "--pid", str(pid), f"--fsize={limit}"], check=True)


def test_writes_that_fail_on_a_full_disk_change_nothing_and_succeed_when_retried(folder_index):
    if os.environ.get("SEMSEARCH_MILVUS_URI"):
        pytest.skip("a Milvus server writes to its own disk; this fills the service's")
    seeds, index = folder_index
    server, url = start_server(index, STAND_IN | {"SEMSEARCH_API_KEY": KEY})
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            kept = {"id": "kept", "text": "Zephyrkept reports on the tides of the northern bay."}
            assert client.post("/documents", json={"documents": [kept]}).status_code == 200
            fsize(server.pid, "0:unlimited")  # from now on every write of the server fails, as on a full disk
            lost = {"id": "lost", "text": "Quokkalost marsupials were counted on the island this spring."}
            failed = client.post("/documents", json={"documents": [lost]})
            assert failed.status_code == 503 and failed.json()["error"]["code"] == "write_failed"
            refused = client.delete("/documents/kept")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "write_failed"
            assert found_ids(url, "zephyrkept") == {"kept"}  # still served, still deletable
            assert found_ids(url, "quokkalost") == set()
            fsize(server.pid, "unlimited:unlimited")
            other = {"id": "other", "text": "An unrelated note about bridges."}
            assert client.post("/documents", json={"documents": [other]}).status_code == 200
            assert found_ids(url, "quokkalost") == set()  # the failed document never turns up later
            assert client.delete("/documents/kept").status_code == 200  # the failed delete is not half-done
            assert found_ids(url, "zephyrkept") == set()
            assert client.delete("/documents/kept").status_code == 404
    finally:
        fsize(server.pid, "unlimited:unlimited")
        stop_server(server)
    assert up_to_date(seeds, index)  # nothing stored that the index does not serve
    semsearch("index", str(seeds), "--out", str(index), env=STAND_IN)  # a folder reindex brings nothing back
    assert "lost" not in semsearch("search", "quokkalost", "--index", str(index), "--mode", "keyword",
                                   env=STAND_IN).stdout


def test_an_ingest_killed_midway_is_all_or_nothing_after_a_restart(faiss_folder_index):
    """Killed while its segment is being written (seen on disk: FAISS stages it in the index folder),
    an ingest leaves none of its batch. (A Milvus write that fails midway: tests/test_milvus.py.)"""
    seeds, index = faiss_folder_index
    batch = [{"id": f"bulk-{n}", "text": f"Xylokill bulletin {n}. " + "Ferries ran late along the coast. " * 150}
             for n in range(1000)]  # about 5 MB: the limits below let it through
    limits = {"SEMSEARCH_API_KEY": KEY, "SEMSEARCH_MAX_DOCUMENTS_PER_CALL": "1000", "SEMSEARCH_MAX_BODY_BYTES": "20000000"}
    server, url = start_server(index, STAND_IN | limits)
    before = httpx.get(url + "/readyz").json()["documents"]
    answers = []

    def send() -> None:
        try:
            answers.append(httpx.post(url + "/documents", json={"documents": batch}, headers=AUTH, timeout=120))
        except httpx.HTTPError:
            pass  # the server dies under it

    published = (index / "CURRENT").read_text()
    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 120
    while not any(index.glob(".building-seg-*")) and time.monotonic() < deadline:
        time.sleep(0.001)  # until the batch's segment is being written: embedded, not yet published
    os.kill(server.pid, signal.SIGSTOP)  # frozen mid-write, then killed as it stands
    assert any(index.glob(".building-seg-*")) and (index / "CURRENT").read_text() == published
    server.kill()
    server.wait()
    sender.join()
    stop_server(server)
    assert answers == []  # never acknowledged
    with served(index, STAND_IN | limits) as (_, url):
        ready = httpx.get(url + "/readyz").json()
        assert ready["status"] == "ready" and ready["documents"] == before  # none of the batch
        assert found_ids(url, "xylokill") == set()
    assert up_to_date(seeds, index)


def test_documents_an_older_version_stored_apart_are_taken_into_the_index_by_the_next_build(faiss_folder_index):
    import sqlite3

    seeds, index = faiss_folder_index
    legacy = index / "documents.sqlite"  # what versions before the segment format kept
    with sqlite3.connect(legacy) as db:
        db.execute("CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT, source TEXT, text TEXT)")
        db.execute("INSERT INTO documents VALUES ('old-1', 'Old Note', 'api:old-1', 'Wombatold tracks by the river.')")
    db.close()
    assert not up_to_date(seeds, index)  # --check names it: stored, not yet indexed
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0
    assert not legacy.exists() and up_to_date(seeds, index)
    with served(index, STAND_IN | {"SEMSEARCH_API_KEY": KEY}) as (_, url):
        assert found_ids(url, "wombatold") == {"old-1"}
        assert httpx.delete(url + "/documents/old-1", headers=AUTH).status_code == 200  # an ingested one
        assert found_ids(url, "wombatold") == set()


def test_a_folder_reindex_refuses_to_remove_most_of_an_index_unless_told_to_prune(folder_index, tmp_path):
    seeds, index = folder_index
    (seeds / "bridge.txt").write_text("Bridge Closes\nThe old bridge closed for inspection.\n")
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0  # 3 documents
    (seeds / "bridge.txt").unlink()
    removed_one = semsearch("index", str(seeds), "--out", str(index), env=STAND_IN)
    assert removed_one.returncode == 0 and "removed 1" in removed_one.stdout  # a third: no question asked
    other = tmp_path / "other"
    other.mkdir()
    (other / "ferry.txt").write_text("Ferry Resumes\nThe ferry to the islands resumed service.\n")
    refused = semsearch("index", str(other), "--out", str(index), env=STAND_IN)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "refusing to remove 2 of the index's 2 folder documents" in refused.stderr
    assert "dam, harbour" in refused.stderr and "--prune" in refused.stderr
    assert up_to_date(seeds, index)  # nothing was changed
    pruned = semsearch("index", str(other), "--out", str(index), "--prune", env=STAND_IN)
    assert pruned.returncode == 0 and "removed 2" in pruned.stdout and up_to_date(other, index)
