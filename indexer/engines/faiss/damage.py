"""What is damaged in a FAISS index folder, and what of it can still be read back whole.

Loading stops at the first file that fails its checksum; a repair needs the whole picture: which
generation to build on when the pointer is unreadable, which segments are damaged, and which of
their documents and vectors are still whole. A document is taken back only when its stored
content hash matches what was read, vectors only from files whose checksums match, so a repair
never brings back a silently altered article.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from indexer.engines.faiss import store
from indexer.engines.faiss.dense import DenseParams
from indexer.text.documents import Document, StoredDocument, content_hash
from indexer.index.engine import Damage
from indexer.engines.faiss.integrity import sha256_of
from indexer.text.metadata import Metadata
from indexer.engines.faiss.rowfile import RowFile, load
from indexer.engines.faiss.segment import PIECE_BOUNDS, PIECE_CODES, TABLES, Segment, read_document_list
from indexer.engines.faiss.writer import SegmentStore

BLOCK = 500  # passages whose vectors are read back at a time


def inspect(root: Path, params: DenseParams, opened: dict[str, Segment]) -> Damage:
    """Everything loading checks, past the first problem; intact segments are opened into opened.

    Its plan (a Plan, opaque to callers) is what the repairer publishes, plus the recovered documents."""
    root = Path(root)
    names, pointer = store.generations(root), store.current_generation(root)
    if pointer is None and not names:
        return Damage()  # no index yet: nothing to be damaged
    problems, lost = [], []
    base = pointer if pointer in names and intact_generation(root, pointer) else None
    if base is None:
        problems.append(f"the index pointer {store.POINTER} is missing" if pointer is None else
                        f"the index pointer {store.POINTER} names {pointer[:80]!r}, which is not a generation here"
                        if pointer not in names else
                        f"generation {pointer}, which {store.POINTER} names, is damaged (its manifest or "
                        "tombstones are unreadable or fail their checksums)")
        base = next((name for name in names if intact_generation(root, name)), None)
        newer = [name for name in names if base is None or name > base]  # all damaged: base is the newest whole
        if newer:
            lost.append(f"every change published after {base or 'the first build'} (generation "
                        f"{', '.join(newer)} cannot be read)")
    if base is None:
        return Damage(tuple(problems), lost=tuple(lost) or ("every document ingested over HTTP",), plan=Plan(None, []))
    newer = None if problems else newest_whole(root, [name for name in names if name > base])
    if newer is not None:  # the repair builds on it: the index then serves what it holds
        base = newer
    manifest = store.read_manifest(root, base)
    tombstones = store.tombstones_of(root, base, manifest)
    kept, found = [], Salvage()
    for entry in manifest["segments"]:
        try:
            store.check_segment(root, entry)
            if entry["name"] not in opened:
                opened[entry["name"]] = store.open_segment(root, entry, params)
            kept.append(entry)
        except (store.IndexDamaged, KeyError, TypeError) as exc:
            problems.append(getattr(exc, "message", f"segment entry {entry!r} in {base} is malformed"))
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                found.segment(root, entry, tombstones.get(entry["name"], np.zeros(0, np.int64)))
    healed = {**manifest, "segments": kept,
              **counts([(opened[e["name"]], tombstones[e["name"]]) for e in kept])}
    return Damage(tuple(problems), tuple(found.recovered), tuple(lost + found.lost), tuple(found.lost_from_folders),
                  (manifest.get("model") or {}).get("name"),
                  Plan((base, healed), found.intact_folders, found.intact_pieces), newer)


def newest_whole(root: Path, names: list[str]) -> str | None:
    """The newest of these generations (newest first) whose own files and segments are all whole."""
    for name in names:
        if not intact_generation(root, name):
            continue
        try:
            for entry in store.read_manifest(root, name)["segments"]:
                store.check_segment(root, entry)
        except (store.IndexDamaged, KeyError, TypeError):
            continue
        return name
    return None


@dataclass(frozen=True)
class Plan:
    """A repair: the generation to build on with its manifest less the damaged segments (None: no
    generation is whole), and the damaged segments whose vector files are whole."""

    base: tuple[str, dict] | None
    vector_folders: list[Path]
    intact_pieces: dict = field(default_factory=dict)  # folder -> whether its word piece files are whole too


class RepairingStore(SegmentStore):
    """A writer on the whole part of a damaged index: its next apply publishes the index without
    the damaged segments, plus what the change set upserts, in one commit."""

    def __init__(self, root: Path, model: str, dimension: int, params: DenseParams, opened: dict[str, Segment],
                 plan: Plan) -> None:
        super().__init__(root, model, dimension, params, opened)
        self.plan = plan

    def state(self) -> tuple[str, dict] | None:
        return self.plan.base

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Vectors the whole segments hold, and those of the damaged ones read back from intact files."""
        found = super().embedded(keys)
        for folder in self.plan.vector_folders:
            missing = [k for k in keys if k not in found]
            if missing:
                found.update(intact_vectors(folder, missing, self.plan.intact_pieces.get(folder, False)))
        return found


def intact_generation(root: Path, name: str) -> bool:
    """A generation whose manifest reads, is of this format and whose own files match."""
    manifest = store.read_manifest(root, name)
    return manifest is not None and manifest.get("format_version") == store.FORMAT_VERSION \
        and store.generation_damage(root, name, manifest) is None


def counts(segments: list[tuple[Segment, np.ndarray]]) -> dict[str, int]:
    """Live passages, sentences and documents of segments with their tombstones."""
    total = {"passages": 0, "sentences": 0, "documents": 0}
    for segment, dead in segments:
        live = np.ones(len(segment), dtype=bool)
        live[segment.rows_of(dead)] = False
        bounds = np.asarray(segment.sentence_bounds, dtype=np.int64)
        total["passages"] += int(live.sum())
        total["sentences"] += int(np.diff(bounds)[live].sum())
        total["documents"] += sum(1 for number, *_ in segment.documents() if not np.isin(number, dead))
    return total


class Salvage:
    """What the damaged segments give back: whole documents, their intact vectors, and the rest named."""

    def __init__(self) -> None:
        self.recovered: list[StoredDocument] = []
        self.lost: list[str] = []
        self.lost_from_folders: list[str] = []
        self.intact_folders: list[Path] = []  # damaged segments whose vector files are whole
        self.intact_pieces: dict[Path, bool] = {}

    def segment(self, root: Path, entry: dict, dead: np.ndarray) -> None:
        """Take back the live documents of one damaged segment (from it, else from another segment
        folder holding the same version), and its vectors where their files are intact."""
        folder = root / store.SEGMENTS / entry["name"]
        try:
            info = store.segment_info(root, entry)
        except store.IndexDamaged:
            info = None
        listed = {e["number"]: e for e in read_document_list(folder)}
        numbers = set(listed) | set(document_numbers(folder / TABLES)) | set(
            load(folder / "doc_numbers.npy").tolist() if intact(folder, info, "doc_numbers.npy") else ())
        numbers -= set(np.asarray(dead).tolist())
        if not numbers and not (folder / TABLES).is_file() and not listed:
            self.lost.append(f"the documents of segment {entry['name']} (their list was in its {TABLES})")
            return
        for number in sorted(numbers):
            expected = listed.get(number, {}).get("content_hash")
            document = read_document(folder / TABLES, number, expected) or elsewhere(root, folder, number, expected)
            if document is not None:
                self.recovered.append(document)
                continue
            what = listed.get(number, {})
            name = what.get("id") or f"document number {number} of segment {entry['name']}"
            (self.lost_from_folders if what.get("origin") == "folder" else self.lost).append(name)
        if all(intact(folder, info, f) for f in ("ids.npy", "vectors.npy", "sentence_bounds.npy",
                                                 "sentence_vectors.npy", TABLES)):
            self.intact_folders.append(folder)
            # its word pieces too, when it has them and they are whole (else they are embedded again)
            self.intact_pieces[folder] = all(intact(folder, info, f) for f in (PIECE_CODES, PIECE_BOUNDS))


def intact(folder: Path, info: dict | None, file: str) -> bool:
    """Whether a segment file matches the checksum its (intact) segment.json records."""
    try:
        return info is not None and info["files"].get(file) == sha256_of(folder / file)
    except OSError:
        return False


def connect(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to a segment's tables, or None when the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM documents LIMIT 1").fetchall()
        return db
    except sqlite3.Error:
        return None


def document_numbers(path: Path) -> list[int]:
    """The document numbers a segment's tables still list (none when they cannot be read)."""
    db = connect(path)
    if db is None:
        return []
    with closing(db):
        try:
            return [n for (n,) in db.execute("SELECT doc_number FROM documents")]
        except sqlite3.Error:
            return []


def read_document(path: Path, number: int, expected: str | None) -> StoredDocument | None:
    """Document number from a segment's tables when its row reads and its content hash matches
    (the stored one, and the listed one when known); None otherwise."""
    db = connect(path)
    if db is None:
        return None
    with closing(db):
        try:
            metadata = "metadata" if any(r[1] == "metadata" for r in db.execute("PRAGMA table_info(documents)")) \
                else "NULL"
            row = db.execute(f"SELECT doc_id, title, source, text, origin, content_hash, {metadata} FROM documents "
                             "WHERE doc_number = ?", [number]).fetchone()
        except sqlite3.Error:
            return None
    if row is None:
        return None
    try:
        document = Document(*row[:4], metadata=Metadata.from_json(row[6]))
    except (TypeError, ValueError):
        return None
    whole = content_hash(document) == row[5] and expected in (None, row[5])
    return StoredDocument(document, row[4], row[5]) if whole and row[4] in ("folder", "api") else None


def elsewhere(root: Path, damaged: Path, number: int, expected: str | None) -> StoredDocument | None:
    """The same document version (numbers are never reused) from another segment folder on disk:
    one an older generation still lists, say, or one a merge took in."""
    for folder in sorted((root / store.SEGMENTS).glob("seg-*"), reverse=True):
        if folder != damaged and (found := read_document(folder / TABLES, number, expected)) is not None:
            return found
    return None


def intact_vectors(folder: Path, keys: Sequence[str], with_pieces: bool = False
                   ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(vector, sentence vectors, word piece codes or None) by embedding key, for those of keys
    that a damaged segment whose vector files are intact holds (pieces when with_pieces: its
    piece files are intact too)."""
    db = connect(folder / TABLES)
    if db is None:
        return {}
    found = {}
    ids, bounds = load(folder / "ids.npy"), load(folder / "sentence_bounds.npy")
    vectors, sentences = RowFile(folder / "vectors.npy"), RowFile(folder / "sentence_vectors.npy")
    pieces = RowFile(folder / PIECE_CODES) if with_pieces else None
    piece_bounds = load(folder / PIECE_BOUNDS) if with_pieces else None
    try:
        for first in range(0, len(keys), BLOCK):
            part = list(keys[first:first + BLOCK])
            for key, passage_id in db.execute(f"SELECT key, id FROM passages WHERE key IN "
                                              f"({','.join('?' * len(part))})", part):
                row = int(np.searchsorted(ids, passage_id))
                if row < len(ids) and ids[row] == passage_id:
                    found[key] = (vectors[row].astype(np.float32),
                                  sentences[int(bounds[row]):int(bounds[row + 1])].astype(np.float32),
                                  None if pieces is None else pieces[int(piece_bounds[row]):int(piece_bounds[row + 1])])
    except sqlite3.Error:
        pass  # what was read is whole; the rest is embedded again
    finally:
        db.close()
        vectors.close()
        sentences.close()
        if pieces is not None:
            pieces.close()
    return found
