"""Applies change sets to the FAISS segments in index/ (the IndexWriter of indexer/index/engine.py).

A change set becomes one new segment (its documents, with fresh stable ids) plus tombstones for
the passages it replaces or deletes, published as a new generation. Nothing it keeps is rewritten.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.model.pieces import PIECE_DIMENSION
from indexer.text import neardup
from indexer.engines.faiss import postings, store
from indexer.engines.faiss.dense import DenseParams
from indexer.engines.faiss.document_store import forget_legacy, legacy_documents
from indexer.text.documents import Document
from indexer.index.engine import ChangeSet, IndexInfo, LiveDocument, PreparedDocument, WriteFailed
from indexer.text.keyword import passage_terms
from indexer.text.metadata import Metadata
from indexer.engines.faiss.segment import TABLES, Segment, SegmentRows, has_metadata
from indexer.engines.faiss.segment import write as write_segment

log = logging.getLogger(__name__)


class SegmentStore:
    """The writing side of an index folder; call apply with the folder's build lock held (indexer/index/folder.py)."""

    def __init__(self, root: Path, model: str, dimension: int, params: DenseParams = DenseParams(),
                 opened: dict[str, Segment] | None = None) -> None:
        self.root, self.model, self.dimension, self.params = Path(root), model, dimension, params
        self.opened = {} if opened is None else opened  # shared with a reader in the same process
        self.took_legacy = False  # ingested_documents handed out an older version's documents.sqlite

    def state(self) -> tuple[str, dict] | None:
        """The current generation when there is one for this model and format (None: a build starts
        afresh). Raises IndexDamaged when it is damaged: writing on would drop what it holds."""
        try:
            return store.verify(self.root, self.model, self.dimension)
        except store.IndexDamaged:
            raise
        except store.IndexUnavailable:
            return None

    def segments(self, name: str, manifest: dict) -> list[tuple[Segment, np.ndarray]]:
        """Each segment of a generation with its tombstones (opened and checked once per process)."""
        tombstones = store.tombstones_of(self.root, name, manifest)
        found = []
        for entry in manifest["segments"]:
            if entry["name"] not in self.opened:
                self.opened[entry["name"]] = store.open_segment(self.root, entry, self.params)
            found.append((self.opened[entry["name"]], tombstones[entry["name"]]))
        return found

    def live_documents(self, doc_ids: Sequence[str] | None = None) -> dict[str, LiveDocument]:
        """Documents the current generation serves (all, or those with the given ids)."""
        state = self.state()
        if state is None:
            return {}
        live = {}
        for segment, dead in self.segments(*state):
            for number, doc_id, origin, digest in segment.documents(doc_ids):
                if not np.isin(number, dead):
                    live[doc_id] = LiveDocument(doc_id, number, origin, digest)
        return live

    def ingested_documents(self) -> list[Document]:
        """Documents added over the API that the current generation serves, with their text, and
        those an older version kept in documents.sqlite (the generation's win). Read whatever model
        built the generation, so a rebuild for another model keeps them."""
        legacy = {d.doc_id: d for d in legacy_documents(self.root)}
        self.took_legacy = bool(legacy)
        return list((legacy | {d.doc_id: d for d in self.served_ingested()}).values())

    def served_ingested(self) -> list[Document]:
        name = store.current_generation(self.root)
        manifest = store.read_manifest(self.root, name) if name else None
        if not manifest or manifest.get("format_version") != store.FORMAT_VERSION:
            return []
        tombstones = store.tombstones_of(self.root, name, manifest)
        found = []
        for entry in manifest["segments"]:
            path = self.root / store.SEGMENTS / entry["name"] / TABLES
            try:
                with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    metadata = "metadata" if has_metadata(db) else "NULL"
                    rows = db.execute(f"SELECT doc_number, doc_id, title, source, text, {metadata} FROM documents "
                                      "WHERE origin = 'api'").fetchall()
            except sqlite3.Error as exc:
                raise store.IndexDamaged(f"index file {TABLES} in segment {entry['name']} cannot be read ({exc})",
                                         store.repair_hint(self.root)) from exc
            found += [Document(*row[1:5], metadata=Metadata.from_json(row[5])) for row in rows
                      if not np.isin(row[0], tombstones[entry["name"]])]
        return found

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Vectors the current segments already hold for these embedding inputs."""
        state, found = self.state(), {}
        for segment, _ in self.segments(*state) if state else ():
            missing = [k for k in keys if k not in found]
            if not missing:
                break
            found.update(segment.vectors_by_key(missing))
        return found

    def health(self) -> IndexInfo:
        """The current generation (None: none usable for this model), its counts and chunker."""
        name, manifest = self.state() or (None, {})
        return IndexInfo(name, (manifest.get("model") or {}).get("name"), manifest.get("chunker"),
                         manifest.get("documents", 0), manifest.get("passages", 0), manifest.get("sentences", 0),
                         len(manifest.get("segments", ())), manifest.get("built_at"))

    def apply(self, changes: ChangeSet) -> str:
        """Publish a generation with each batch of upserted documents in a new segment and the
        replaced or deleted documents tombstoned; returns its name. A segment's SQLite file that
        cannot be written is a WriteFailed, as Milvus's refusals are."""
        try:
            return self.write(changes)
        except sqlite3.Error as exc:
            raise WriteFailed(f"a segment of {self.root} could not be written ({exc}); nothing was published") \
                from exc

    def write(self, changes: ChangeSet) -> str:
        state = self.state()
        manifest = state[1] if state else {"segments": [], "next_id": 0, "passages": 0, "documents": 0,
                                           "sentences": 0}
        current = [] if changes.replace_all or not state else self.segments(*state)
        change = {"entries": {e["name"]: e for e in manifest["segments"]} if current else {},
                  "tombstones": {segment.name: dead for segment, dead in current},
                  "counts": {key: manifest[key] if current else 0 for key in ("passages", "documents", "sentences")}}
        self.tombstone(current, list(changes.deletes), change)
        next_id = int(manifest["next_id"])
        for batch in changes.upserts:
            self.tombstone(current, [d.stored.document.doc_id for d in batch], change)
            if batch:
                next_id = self.add_segment(batch, next_id, change)
        entries, tombstones = change["entries"], change["tombstones"]
        for entry in entries.values():
            opened = self.opened.get(entry["name"])
            entry["deleted"] = len(opened.rows_of(tombstones[entry["name"]])) if opened else 0
        name = store.publish(self.root, {
            "model": {"name": self.model, "dimension": self.dimension}, "chunker": changes.chunker,
            "next_id": next_id, **change["counts"], "segments": list(entries.values()), **changes.meta},
            {name: dead for name, dead in tombstones.items() if name in entries})
        if self.took_legacy:  # the build that asked for them holds them now
            try:
                forget_legacy(self.root)
            except OSError as exc:
                log.warning("published, but could not remove the old documents.sqlite in %s: %s", self.root, exc)
        return name

    @staticmethod
    def tombstone(current: list[tuple[Segment, np.ndarray]], doc_ids: list[str], change: dict) -> None:
        """Mark the live documents with these ids (and their passages) deleted in their segments."""
        counts, tombstones = change["counts"], change["tombstones"]
        for segment, dead in current if doc_ids else ():
            gone = [row[0] for row in segment.documents(doc_ids) if not np.isin(row[0], tombstones[segment.name])]
            if not gone:
                continue
            rows = segment.rows_of(segment.select_ids("doc_id", doc_ids))
            rows = rows[np.isin(np.asarray(segment.doc_numbers[rows]), gone)]
            bounds = np.asarray(segment.sentence_bounds)
            counts["passages"] -= len(rows)
            counts["sentences"] -= int((bounds[rows + 1] - bounds[rows]).sum())
            counts["documents"] -= len(gone)
            tombstones[segment.name] = np.union1d(tombstones[segment.name],
                                                  np.concatenate([segment.ids[rows], gone]).astype(np.int64))

    def add_segment(self, batch: Sequence[PreparedDocument], next_id: int, change: dict) -> int:
        """Write and install one segment for a batch of documents; returns the next free id."""
        rows, next_id = self.rows_for(batch, next_id)
        staging = store.new_staging(self.root, store.new_name("seg"))
        name = staging.name.removeprefix(".building-").rsplit("-", 1)[0]
        try:
            info = write_segment(staging / name, rows, self.model, self.params)
            folder = store.install_segment(self.root, staging / name)
        finally:  # a failed write leaves nothing behind; the generation in use is untouched
            shutil.rmtree(staging, ignore_errors=True)
        change["entries"][name] = {"name": name, "info_sha256": store.sha256_of(folder / "segment.json"),
                                   "passages": info["passages"]}
        change["tombstones"][name] = np.zeros(0, np.int64)
        for key in ("passages", "sentences", "documents"):
            change["counts"][key] += info[key]
        return next_id

    def rows_for(self, documents: Sequence[PreparedDocument], next_id: int) -> tuple[SegmentRows, int]:
        """A new segment's rows: each document gets a number, then each passage an id, from next_id."""
        ids, numbers, passages, keys, bounds = [], [], [], [], [0]
        for prepared in documents:
            number, next_id = next_id, next_id + 1
            for passage, key, sentences in zip(prepared.passages, prepared.keys, prepared.sentence_counts):
                ids.append(next_id)
                numbers.append(number)
                passages.append(passage)
                keys.append(key)
                bounds.append(bounds[-1] + sentences)
                next_id += 1
        doc_numbers = np.array(numbers, dtype=np.int64)
        documents_rows, number = [], next_id - len(ids) - len(documents)
        for prepared in documents:  # numbers were handed out in this order, before each one's passages
            documents_rows.append((number, prepared.stored))
            number += 1 + len(prepared.passages)
        dimension = self.dimension
        return SegmentRows(
            ids=np.array(ids, dtype=np.int64), doc_numbers=doc_numbers, passages=passages, keys=keys,
            vectors=np.vstack([p.vectors for p in documents] or [np.zeros((0, dimension))]),
            sentence_spans=np.vstack([p.sentence_spans.reshape(-1, 2) for p in documents] or [np.zeros((0, 2))]),
            sentence_vectors=np.vstack([p.sentence_vectors.reshape(-1, dimension) for p in documents]
                                       or [np.zeros((0, dimension))]),
            sentence_bounds=np.array(bounds, dtype=np.int64), minhashes=neardup.signatures([p.text for p in passages]),
            postings=postings.build(passage_terms(passages)), documents=documents_rows,
            **piece_rows([codes for prepared in documents for codes in prepared.pieces], len(passages))), next_id


def piece_rows(pieces: list[np.ndarray], passages: int) -> dict:
    """SegmentRows' piece_codes and piece_bounds, when every passage came with its pieces."""
    if len(pieces) != passages:
        return {}
    sizes = [len(p) for p in pieces]
    return {"piece_codes": np.concatenate(pieces or [np.zeros((0, PIECE_DIMENSION), np.int8)]).astype(np.int8),
            "piece_bounds": np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)}
