"""Damage and repair: --check sees every damaged file, every printed fix is run and keeps every
document it can read back, and what cannot be read back is named before anything is dropped.

Each test damages a copy of one index holding folder documents and documents ingested over HTTP
(each ingest its own segment), runs the commands a user would, and compares document counts and
search results with the undamaged index."""

from __future__ import annotations

import gc
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from indexer.engines.faiss import store
from indexer.index.build import build_from_folder, update_documents
from indexer.text.documents import Document
from indexer.model.embedding import light_model_for
from indexer.errors import program
from indexer.engines.faiss.merge import MergePolicy, merge_all
from indexer.engines.faiss.writer import SegmentStore
from tests.conftest import STAND_IN, flip, semsearch

FOLDER = {f"harbour-{i}": f"Harbour {i} Reopens\nThe harbour of town {i} reopened after a year of repairs to the "
                          f"sea wall.\nFishing boats returned within hours.\n" for i in range(3)}
INGESTED = [("ferry", "Ferry Returns", "The island ferry resumed sailing on Monday after the storm."),
            ("dam", "Dam Approved", "The council approved a hydroelectric dam on the northern river.")]
QUERY = "harbour ferry dam repairs sailing"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """seeds/ with three articles, and an index of them plus two documents ingested over HTTP."""
    base = tmp_path_factory.mktemp("repair")
    seeds = base / "seeds"
    seeds.mkdir()
    for name, text in FOLDER.items():
        (seeds / f"{name}.txt").write_text(text)
    model = light_model_for("hashing")
    build_from_folder(seeds, base / "index", model, progress=False)
    for doc_id, title, text in INGESTED:
        update_documents(base / "index", model, [Document(doc_id, title, f"api:{doc_id}", text)], [])
    return base, results(base / "index")


@pytest.fixture()
def damaged(pristine, tmp_path):
    """A private copy of seeds/ and the index, and the undamaged index's search results."""
    base, before = pristine
    shutil.copytree(base / "seeds", tmp_path / "seeds")
    shutil.copytree(base / "index", tmp_path / "index")
    return tmp_path / "seeds", tmp_path / "index", before


def run(*args):
    return semsearch(*args, env=STAND_IN)


def results(index: Path) -> tuple[int, list[tuple[str, str]]]:
    """The documents the index counts, and (doc_id, passage text) of every hit for QUERY: what a user sees."""
    found = run("search", QUERY, "--index", str(index), "-k", "20", "--json")
    assert found.returncode == 0, found.stderr
    return (store.read_manifest(index)["documents"],
            sorted((r["doc_id"], r["text"]) for r in json.loads(found.stdout)["results"]))


def segment_of(index: Path, doc_id: str) -> Path:
    """The folder of the segment that holds doc_id in the current generation."""
    import sqlite3

    for entry in store.read_manifest(index)["segments"]:
        folder = index / store.SEGMENTS / entry["name"]
        with sqlite3.connect(f"file:{folder / 'segment.sqlite'}?mode=ro", uri=True) as db:
            if db.execute("SELECT 1 FROM documents WHERE doc_id = ?", [doc_id]).fetchone():
                return folder
    raise AssertionError(f"{doc_id} is in no segment")


def printed_fix(result) -> list[str]:
    """The command after 'fix:' in an error, as arguments (a comment after '#' dropped, as a shell does)."""
    line = next(line for line in result.stderr.splitlines() if line.strip().startswith("fix:"))
    command = shlex.split(line.split("fix:", 1)[1], comments=True)
    assert command[:len(program())] == program(), line  # semsearch as this shell runs it
    return command[len(program()):]


def assert_check_names(index: Path, seeds: Path, words: str) -> list[str]:
    """`index --check` fails (exit 2) naming the damage and printing a repair; returns that fix."""
    checked = run("index", str(seeds), "--out", str(index), "--check")
    assert checked.returncode == 2 and words in checked.stderr, checked.stderr
    assert "bug" not in checked.stderr and "Traceback" not in checked.stderr
    fix = printed_fix(checked)
    assert fix[:2] == ["repair", str(index)]
    return fix


def test_a_corrupt_pointer_is_repaired_by_the_printed_fix_with_every_ingested_document(damaged):
    seeds, index, before = damaged
    (index / "CURRENT").write_bytes(b"garbage")
    searched = run("search", "ferry", "--index", str(index))
    assert searched.returncode == 2 and "CURRENT" in searched.stderr
    fix = assert_check_names(index, seeds, "CURRENT")
    repaired = run(*printed_fix(searched))
    assert repaired.returncode == 0 and "nothing had to be indexed again" in repaired.stdout, repaired.stderr
    assert results(index) == before
    assert run("index", str(seeds), "--out", str(index), "--check").returncode == 0
    assert fix == printed_fix(searched)


def test_the_old_fix_a_reindex_now_repairs_first_and_keeps_ingested_documents(damaged):
    seeds, index, before = damaged
    (index / "CURRENT").unlink()
    reindexed = run("index", str(seeds), "--out", str(index))
    assert reindexed.returncode == 0 and "repaired" in reindexed.stdout, reindexed.stderr
    assert results(index) == before


@pytest.mark.parametrize("file, damage, embedded", [
    ("vectors.npy", flip, True),  # the vectors themselves: those passages are embedded again
    ("postings_rows.npy", lambda path: path.write_bytes(path.read_bytes()[:-16]), False),  # derived: vectors reused
])
@pytest.mark.parametrize("holder", ["harbour-1", "ferry"])
def test_a_corrupt_segment_file_fails_check_and_its_repair_keeps_every_document(damaged, file, damage, embedded,
                                                                                 holder):
    seeds, index, before = damaged
    damage(segment_of(index, holder) / file)
    assert run("search", "ferry", "--index", str(index)).returncode == 2
    fix = assert_check_names(index, seeds, file)
    repaired = run(*fix)
    assert repaired.returncode == 0, repaired.stderr
    passages = 6 if holder == "harbour-1" else 1  # three articles of two paragraphs, or one note
    assert f"({passages if embedded else 0} passages embedded" in repaired.stdout
    assert results(index) == before
    assert run("index", str(seeds), "--out", str(index), "--check").returncode == 0


def test_a_lost_segment_database_is_an_error_with_a_fix_and_folder_documents_come_back(damaged):
    seeds, index, before = damaged
    (segment_of(index, "harbour-0") / "segment.sqlite").unlink()
    for command in (("search", "ferry", "--index", str(index)), ("index", str(seeds), "--out", str(index), "--check"),
                    ("index", str(seeds), "--out", str(index), "--force")):
        result = run(*command)
        assert result.returncode in (0, 2) and "bug" not in result.stderr, result.stderr
    assert results(index) == before  # the reindex (--force) repaired first, then re-read the folder


def test_a_lost_segment_database_leaves_folder_documents_to_the_next_reindex(damaged):
    seeds, index, before = damaged
    (segment_of(index, "harbour-0") / "segment.sqlite").unlink()
    repaired = run("repair", str(index))
    assert repaired.returncode == 0, repaired.stderr
    assert "harbour-0, harbour-1, harbour-2" in repaired.stdout  # named: their folder must be indexed again
    assert results(index)[0] == 2 and {d for d, _ in results(index)[1]} == {"ferry", "dam"}
    stale = run("index", str(seeds), "--out", str(index), "--check")
    assert stale.returncode == 1 and "added: harbour-0" in stale.stdout
    assert run("index", str(seeds), "--out", str(index)).returncode == 0
    assert results(index) == before


def test_an_ingested_document_nothing_holds_is_named_and_dropped_only_when_accepted(damaged):
    seeds, index, before = damaged
    (segment_of(index, "dam") / "segment.sqlite").unlink()
    refused = run("repair", str(index))
    assert refused.returncode == 2 and "dam" in refused.stderr and "Nothing was changed" in refused.stderr
    assert run("index", str(seeds), "--out", str(index)).returncode == 2  # a reindex refuses too
    fix = printed_fix(refused)
    assert fix == ["repair", str(index), "--accept-loss"]
    accepted = run(*fix)
    assert accepted.returncode == 0 and "lost (accepted): dam" in accepted.stdout, accepted.stderr
    assert results(index) == (before[0] - 1, [hit for hit in before[1] if hit[0] != "dam"])


def test_a_merged_segment_is_rebuilt_from_the_segments_an_older_generation_still_holds(damaged):
    seeds, index, before = damaged
    model = light_model_for("hashing")
    merged = merge_all(SegmentStore(index, model.name, model.dimension), MergePolicy(factor=3))
    assert merged and len(store.read_manifest(index)["segments"]) == 1
    (segment_of(index, "ferry") / "segment.sqlite").unlink()  # the documents' only copy in this generation
    repaired = run("repair", str(index))
    assert repaired.returncode == 0 and "5 documents of the damaged parts read back" in repaired.stdout, \
        repaired.stderr
    assert results(index) == before


def test_a_server_on_a_damaged_index_says_repair_and_serves_again_after_it(damaged):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from indexer.settings import Settings

    seeds, index, before = damaged
    flip(segment_of(index, "ferry") / "vectors.npy")
    settings = Settings(index_dir=index, model_path="hashing", reload_interval=0, api_key="k")
    with TestClient(create_app(settings)) as client:
        error = client.get("/readyz").json()["error"]
        assert error["fix"].startswith("semsearch repair INDEX_DIR  # INDEX_DIR: the index folder this server")
        assert str(index) not in json.dumps(error)  # no server paths in answers
        ingest = client.post("/documents", headers={"Authorization": "Bearer k"},
                             json={"documents": [{"id": "late", "text": "A late story."}]})
        assert ingest.status_code == 503  # no write on a damaged index
        assert run("repair", str(index)).returncode == 0
        client.post("/admin/reload", headers={"Authorization": "Bearer k"})
        assert client.get("/readyz").status_code == 200
    assert results(index) == before


def test_a_segment_no_snapshot_holds_has_its_files_closed(damaged):
    _, index, _ = damaged
    entry = store.read_manifest(index)["segments"][0]
    path = str((index / store.SEGMENTS / entry["name"] / "segment.sqlite").resolve())

    def open_files() -> list[str]:
        return [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")]
    gc.disable()  # the point: closed when the last reference goes, not whenever the collector runs
    try:
        segment = store.open_segment(index, entry)
        assert path in open_files() and len(segment) == entry["passages"]
        del segment
        assert path not in open_files()
    finally:
        gc.enable()


def test_a_merge_whose_source_another_writer_replaced_is_abandoned_quietly_and_planned_again(damaged, caplog,
                                                                                              monkeypatch):
    from indexer.engines.faiss import merge

    seeds, index, before = damaged
    model = light_model_for("hashing")
    writer = SegmentStore(index, model.name, model.dimension)
    real = merge.write_merged

    def raced(folder, sources, *args):
        # Another process reindexes from scratch and the old segments' files go, mid-merge.
        build_from_folder(seeds, index, model, progress=False, force=True)
        for segment, _ in sources:
            shutil.rmtree(segment.folder)
        return real(folder, sources, *args)
    monkeypatch.setattr(merge, "write_merged", raced)
    with caplog.at_level("INFO", logger="indexer.engines.faiss.merge"):
        done = merge_all(writer, MergePolicy(factor=3))
    assert "abandoned" in caplog.text and not [r for r in caplog.records if r.levelname == "ERROR"]
    assert done == [] and not list(index.glob(".building-*"))
    assert results(index) == before


def test_two_documents_with_one_id_in_one_request_are_refused_naming_the_second(damaged):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from indexer.settings import Settings

    _, index, before = damaged
    settings = Settings(index_dir=index, model_path="hashing", reload_interval=0, api_key="k")
    with TestClient(create_app(settings)) as client:
        answer = client.post("/documents", headers={"Authorization": "Bearer k"}, json={"documents": [
            {"id": "twice", "text": "First copy."}, {"id": "twice", "text": "Second copy."}]})
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "documents.1.id"
        assert "documents.0" in answer.json()["error"]["message"]
    assert results(index) == before
