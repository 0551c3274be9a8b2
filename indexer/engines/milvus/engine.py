"""The Milvus engine as the seam sees it (indexer/index/engine.py): opening, health, repair, upkeep."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from indexer.text.documents import content_hash
from indexer.errors import WriteBusy, fix_command
from indexer.index.progress import count
from indexer.index.engine import Damage, IndexDamaged, IndexReader, IndexUnavailable
from indexer.index.folder import read_record
from indexer.engines.milvus.client import (IN_VALUES, Milvus, Names, among, chunks, collection_name, default_uri,
                                           disconnect, located, visible)
from indexer.engines.milvus.schema import generation_name, layout_of, sentence_keys
from indexer.engines.milvus.reader import MilvusReader, TermTable
from indexer.engines.milvus.writer import MilvusWriter, read_documents

log = logging.getLogger(__name__)


class MilvusEngine:
    """An index in Milvus (Engine): the folder keeps the build lock, the embedding cache and
    engine.json (this engine, its URI and collection)."""

    def __init__(self, root: Path, model: str, dimension: int, uri: str | None = None, token: str | None = None,
                 collection: str | None = None, timeout: float | None = None, **_ignored) -> None:
        record = read_record(root) or {}
        self.root, self.model, self.dimension = Path(root), model, dimension
        self.uri = located(root, uri)
        self.collection = collection or record.get("collection") or collection_name(root, self.uri)
        self.milvus = Milvus(self.uri, token, self.collection, timeout)
        self.terms = TermTable()  # kept once prepare() is called: by a service, not by a one-off command

    def describe(self) -> dict:
        """What the folder's engine.json records: the URI unless it is the folder's own Milvus Lite
        file (so a copy of the folder is a copy of the index), and the collection."""
        located = {} if self.uri == default_uri(self.root) else {"uri": self.uri}
        return {"engine": "milvus", **located, "collection": self.collection}

    def current(self) -> str | None:
        state = self.milvus.state()
        return generation_name(state) if state else None

    @staticmethod
    def recorded_model(root: Path, uri: str | None = None, token: str | None = None, **_options) -> dict | None:
        record = read_record(root) or {}
        uri = located(root, uri)
        if "://" not in uri and not Path(uri).exists():
            return None  # Milvus Lite makes its file on first use: no file, no index
        state = Milvus(uri, token, record.get("collection") or collection_name(root, uri)).state()
        return state["model"] if state else None

    def reader(self) -> IndexReader:
        state = self.milvus.state()
        if state is None:
            raise IndexUnavailable(f"no index in Milvus at {self.uri} (collection {self.collection})",
                                   fix_command("index", "FOLDER", "--out", self.root, "--engine", "milvus",
                                               note="FOLDER: the folder of your articles"))
        if state["model"]["name"] != self.model or state["model"]["dimension"] != self.dimension:
            raise IndexUnavailable(f"the index in Milvus at {self.uri} was built with {state['model']['name']}, "
                                   f"not {self.model}", fix_command("index", "FOLDER", "--out", self.root, "--force",
                                                                   note="FOLDER: the folder of your articles"))
        reader = MilvusReader(self.milvus, state, self.terms)
        for name in reader.names.all():
            if not self.milvus.exists(name):
                raise IndexDamaged(f"Milvus collection {name} is missing", fix_command("repair", self.root))
        return reader

    def writer(self) -> MilvusWriter:
        return MilvusWriter(self.milvus, self.model, self.dimension)

    def prepare(self) -> None:
        """Bring the term frequencies to the newest generation (every term once, then the terms each
        write changed), so that the service's searches make no call for them. Problems are left for
        reader()."""
        try:
            state = self.milvus.state()
            if state is not None and self.terms.of(state) is None:
                started, rows = time.perf_counter(), self.terms.follow(self.milvus, state)
                if rows > 10_000:
                    log.info("read %s of %s in %.1f s", count(rows, "term"), generation_name(state),
                             time.perf_counter() - started)
        except IndexUnavailable:
            return

    def maintain(self) -> list[str]:
        """Remove rows no search reads any more (replaced or deleted two generations ago or more)
        and a build that was replaced."""
        try:
            with self.milvus.lease(wait=0):  # upkeep never waits for a write: it runs again later
                return self.tidy_up()
        except WriteBusy:
            return []

    def tidy_up(self) -> list[str]:
        state, done = self.milvus.state(), []
        if state is None:
            return done
        old = state.get("previous_build")
        if old and old != state["build"]:
            for name in Names.of(self.collection, old).all():
                self.milvus.drop(name)
            self.milvus.commit({**state, "previous_build": None})
            done.append(f"dropped the collections of build {old}")
        names, before = Names.of(self.collection, state["build"]), int(state["generation"])
        dead = self.milvus.query(names.passages, f"died < {before}", ["id", "spans"])
        if dead:
            ids = [int(r["id"]) for r in dead]
            for part in chunks(sentence_keys({int(r["id"]): r for r in dead}) if layout_of(state) < 2 else [],
                               IN_VALUES):
                self.milvus.delete(names.sentences, among("id", part))
            for part in chunks(ids, IN_VALUES):
                self.milvus.delete(names.passages, among("id", part))
            self.milvus.delete(names.documents, f"died < {before}")
            done.append(f"removed {len(ids)} replaced passages")
        return done

    def release(self, serving: IndexReader) -> None:
        return None

    def close(self) -> None:
        disconnect(self.uri, self.milvus.token)
        self.milvus.loaded.clear()

    def inspect(self) -> Damage:
        """The state readable, the build's collections present, and their live rows as counted."""
        state = self.milvus.state()
        if state is None:
            return Damage()
        names, problems = Names.of(self.collection, state["build"]), []
        missing = [n for n in names.all() if not self.milvus.exists(n)]
        if missing:
            problems.append(f"Milvus collections missing: {', '.join(missing)}")
        else:
            live = visible(int(state["generation"]))
            for name, key in ((names.passages, "passages"), (names.documents, "documents")):
                found = self.milvus.count(name, live + (" and part == 0" if key == "documents" else ""))
                if found != state[key]:
                    problems.append(f"{name} holds {found} live {key}, the state says {state[key]}")
        if not problems:
            return Damage(model=state["model"]["name"])
        kept = [] if names.documents in missing else read_documents(self.milvus, state, "doc_number >= 0")
        whole = tuple(d for d in kept if content_hash(d.document) == d.content_hash)
        return Damage(problems=tuple(problems), recoverable=whole, model=state["model"]["name"])

    def repairer(self, damage: Damage) -> MilvusWriter:
        """A damaged index is rebuilt from the documents read back (damage.recoverable, which the
        repair upserts); an intact one has no damaged part to leave out, so it is written as is."""
        return MilvusWriter(self.milvus, self.model, self.dimension, rebuild=not damage.intact)
