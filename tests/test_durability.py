"""Writes that survive a power cut, checked by their order instead of by cutting power: every
publish step goes through indexer/index/durable.py, whose system calls a recorder watches here (each file
flushed before the rename that publishes it, each folder flushed after a rename into it, before
the call returns) and a fault injector breaks one at a time (the index stays whole and serves the
old or the new documents, never a mix, and the write can be retried)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from indexer.index import durable
from indexer.index.build import build_from_folder, update_documents
from indexer.text.documents import Document
from indexer.index.engine import open_engine
from indexer.model.hashing_encoder import HashingEncoder
from tests.conftest import ARTICLES, semsearch, write_seeds

NEW = Document("ferry", "Ferry", "api", "The island ferry runs again from Monday after a month in dry dock.")


class Recorder(durable.Operations):
    """Does each call and logs it; checks that what a rename publishes was flushed; fails call
    number fail_at (0-based) with EIO instead of doing it."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, Path]] = []
        self.flushed: set[Path] = set()
        self.unflushed_at_rename: list[Path] = []
        self.fail_at = fail_at

    def step(self, kind: str, path: Path) -> None:
        self.calls.append((kind, Path(path)))
        if self.fail_at == len(self.calls) - 1:
            raise OSError(errno.EIO, f"injected fault at {kind} {path}")

    def fsync_file(self, path):
        self.step("fsync_file", path)
        super().fsync_file(path)
        self.flushed.add(Path(path))

    def fsync_dir(self, path):
        self.step("fsync_dir", path)
        super().fsync_dir(path)

    def published(self, source: Path) -> None:
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        self.unflushed_at_rename += [p for p in files if p not in self.flushed]

    def rename(self, source, target):
        self.step("rename", target)
        self.published(Path(source))
        super().rename(source, target)

    def replace(self, source, target):
        self.step("replace", target)
        self.published(Path(source))
        super().replace(source, target)


@pytest.fixture()
def built(tmp_path) -> tuple[Path, HashingEncoder]:
    model, index = HashingEncoder(), tmp_path / "index"
    build_from_folder(write_seeds(tmp_path / "seeds", ARTICLES), index, model, progress=False,
                      engine=open_engine(index, model.name, model.dimension, "faiss"))
    return index, model


def documents_of(index: Path, model) -> set[str]:
    engine = open_engine(index, model.name, model.dimension)
    try:
        assert engine.inspect().intact
        return {doc_id for doc_id, *_ in engine.reader().document_ids(0, 100)[1]}
    finally:
        engine.close()


def test_a_publish_flushes_each_file_before_its_rename_and_each_folder_after(built, monkeypatch):
    index, model = built
    recorder = Recorder()
    monkeypatch.setattr(durable, "ops", recorder)
    update_documents(index, model, [NEW], ["dam"])
    kinds = [kind for kind, _ in recorder.calls]
    assert recorder.unflushed_at_rename == []
    for position, (kind, target) in enumerate(recorder.calls):
        if kind in ("rename", "replace"):  # the folder holding the new name is flushed before anything else is renamed
            following = recorder.calls[position + 1:]
            flushed = next(i for i, call in enumerate(following) if call == ("fsync_dir", target.parent))
            assert all(k not in ("rename", "replace") for k, _ in following[:flushed]), recorder.calls
    pointer = max(i for i, (kind, target) in enumerate(recorder.calls) if target.name == "CURRENT")
    assert kinds[pointer] == "replace" and recorder.calls[-1] == ("fsync_dir", index)  # acknowledged only after
    generation = [i for i, (kind, target) in enumerate(recorder.calls) if kind == "rename"
                  and target.name.startswith("gen-")]
    assert generation and generation[-1] < pointer


def test_a_fault_at_any_publish_step_leaves_the_index_whole_and_the_write_retryable(built, tmp_path, monkeypatch):
    index, model = built
    before = documents_of(index, model)
    counted = Recorder()
    monkeypatch.setattr(durable, "ops", counted)
    update_documents(shutil.copytree(index, tmp_path / "counted"), model, [NEW], ["dam"])
    after = (before - {"dam"}) | {"ferry"}
    for fail_at in range(len(counted.calls)):
        copy = shutil.copytree(index, tmp_path / f"fault-{fail_at}")
        monkeypatch.setattr(durable, "ops", Recorder(fail_at))
        with pytest.raises(OSError, match="injected fault"):
            update_documents(copy, model, [NEW], ["dam"])
        monkeypatch.setattr(durable, "ops", durable.Operations())
        found = documents_of(copy, model)
        assert found in (before, after), counted.calls[fail_at]
        update_documents(copy, model, [NEW], ["dam"] if found == before else [])  # the write again succeeds
        assert documents_of(copy, model) == after


def test_engine_json_is_written_durably_on_both_engines(tmp_path, monkeypatch, engine_kind):
    model, recorder = HashingEncoder(), Recorder()
    monkeypatch.setattr(durable, "ops", recorder)
    engine = open_engine(tmp_path / "index", model.name, model.dimension, engine_kind)
    build_from_folder(write_seeds(tmp_path / "seeds", ARTICLES), tmp_path / "index", model, progress=False,
                      engine=engine)
    engine.close()
    record = tmp_path / "index" / "engine.json"
    at = recorder.calls.index(("replace", record))
    assert recorder.unflushed_at_rename == [] and ("fsync_dir", record.parent) in recorder.calls[at + 1:]


def test_check_warns_when_current_is_older_than_a_whole_generation_and_repair_serves_the_newest(built):
    index, model = built
    update_documents(index, model, [NEW], [])
    newest = (index / "CURRENT").read_text().strip()
    older = sorted(p.name for p in index.glob("gen-*"))[-2]
    (index / "CURRENT").write_text(older + "\n")  # as a power cut after the last write could leave it
    seeds = index.parent / "seeds"
    checked = semsearch("index", str(seeds), "--out", str(index), "--check", env={"SEMSEARCH_MODEL_PATH": "hashing"})
    assert f"CURRENT names {older}, but {newest} is newer and whole" in checked.stderr, checked.stderr
    repaired = semsearch("repair", str(index), env={"SEMSEARCH_MODEL_PATH": "hashing"})
    assert repaired.returncode == 0 and f"now serves what {newest} holds" in repaired.stdout, repaired.stderr
    assert "ferry" in documents_of(index, model)
    checked = semsearch("index", str(seeds), "--out", str(index), "--check", env={"SEMSEARCH_MODEL_PATH": "hashing"})
    assert "CURRENT names" not in checked.stderr


def test_a_cache_that_cannot_be_written_is_a_named_write_failure_with_nothing_published(tmp_path, embedder):
    """The engines and the embedding cache report a write they cannot make as WriteFailed (an
    OSError, so the CLI and the API say it as they say a full disk), never as a bare sqlite3 error."""
    from indexer.index.cache import CACHE_FILE
    from indexer.errors import WriteFailed

    model = embedder  # the real model keeps an embedding cache (the stand-in is faster than one)
    seeds = tmp_path / "seeds"
    write_seeds(seeds, {"harbour.txt": ARTICLES["harbour.txt"]})
    index = tmp_path / "index"
    build_from_folder(seeds, index, model, progress=False)
    before = open_engine(index, model.name, model.dimension).current()
    (index / CACHE_FILE).unlink(missing_ok=True)
    (index / CACHE_FILE).mkdir()  # a file SQLite cannot open
    with pytest.raises(WriteFailed) as failed:
        update_documents(index, model, [Document("extra", "Extra", "api", "Extra\nA new note about the ferry.\n")], [])
    assert f"the embedding cache {index / CACHE_FILE} could not be written" in str(failed.value)
    assert open_engine(index, model.name, model.dimension).current() == before
