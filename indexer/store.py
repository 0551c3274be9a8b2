"""The one place that reads and writes index/: generations, manifest, pointer."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from indexer import keyword, passage_table
from indexer.chunking import Passage
from indexer.passage_table import StoredDocument

FORMAT_VERSION = 2  # 2: generations record their documents
POINTER = "CURRENT"
KEEP_GENERATIONS = 3


class IndexUnavailable(RuntimeError):
    """The index is missing, corrupt or built for another model; fix says which command mends it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class IndexContents:
    """Everything a generation holds, in memory: row i of each array belongs to passages[i]."""

    passages: tuple[Passage, ...]
    vectors: np.ndarray            # (n, dim) float32, unit length
    sentence_spans: np.ndarray     # (m, 2) document offsets of every passage's sentences
    sentence_vectors: np.ndarray   # (m, dim) float32, unit length
    sentence_bounds: np.ndarray    # (n + 1,) passage i owns sentence rows bounds[i]:bounds[i+1]
    keyword_index: Any             # bm25s.BM25 over the same passages
    model: str
    dimension: int


@dataclass(frozen=True)
class LoadedIndex:
    """A generation read back from disk, with the FAISS index ready to search."""

    generation: str
    manifest: dict
    contents: IndexContents
    faiss_index: Any


@contextmanager
def sqlite_transaction(path: Path, durable: bool = False, wal: bool = True) -> Iterator[sqlite3.Connection]:
    """One committed-or-rolled-back transaction on a SQLite file, closed afterwards."""
    db = sqlite3.connect(path, timeout=30)
    try:
        if wal:  # stores that live across builds: readers never block the writer
            db.execute("PRAGMA journal_mode=WAL")
        if durable:
            db.execute("PRAGMA synchronous=FULL")
        with db:
            yield db
    finally:
        db.close()


@contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """One build at a time per index folder, across processes (CLI and service)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def new_staging(root: Path) -> Path:
    """A fresh folder for the next generation; leftovers of killed builds are removed first."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".building-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid()):
            shutil.rmtree(leftover, ignore_errors=True)
    # Microseconds make names sort in build order, which cleanup relies on.
    name = datetime.now(timezone.utc).strftime("gen-%Y%m%dT%H%M%S%fZ-") + uuid.uuid4().hex[:6]
    staging = root / f".building-{name}-{os.getpid()}"
    staging.mkdir()
    return staging


def rebuild_hint(root: Path) -> str:
    return f"semsearch index seeds --out {root}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_generation(root: Path, contents: IndexContents, documents: Sequence[StoredDocument],
                     staging: Path | None = None, chunker: str | None = None) -> Path:
    """Write contents as a new generation, then switch the pointer to it atomically.

    chunker: a fingerprint of how the passages were cut, so the next build may reuse them.
    """
    import faiss

    root = Path(root)
    staging = staging or new_staging(root)
    name = staging.name.removeprefix(".building-").rsplit("-", 1)[0]
    try:
        faiss.write_index(flat_index(contents.vectors), str(staging / "vectors.faiss"))
        faiss.write_index(flat_index(contents.sentence_vectors), str(staging / "sentences.faiss"))
        passage_table.write(staging / passage_table.FILE, contents.passages, contents.sentence_spans,
                            contents.sentence_bounds, documents)
        keyword.save(contents.keyword_index, staging / "keyword")
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": {"name": contents.model, "dimension": contents.dimension},
            "passages": len(contents.passages),
            "sentences": int(contents.sentence_spans.shape[0]),
            "documents": len(documents),
            "chunker": chunker,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {p.relative_to(staging).as_posix(): sha256_of(p) for p in files},
        }
        # The manifest is written last: a folder without one was never finished.
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        fsync_tree(staging)
        final = root / name
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    switch_pointer(root, name)
    remove_old_generations(root, keep=name)
    return final


def flat_index(vectors: np.ndarray):
    """An exact inner-product FAISS index (cosine, since vectors are unit length)."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def read_documents(root: Path) -> dict[str, StoredDocument]:
    """The documents the current generation was built from (empty when there is none)."""
    name = current_generation(root)
    path = Path(root) / name / passage_table.FILE if name else None
    if path is None or not path.is_file():
        return {}
    return passage_table.read_documents(path)


def current_passages(root: Path) -> tuple[Passage, ...]:
    """The passages of the current generation, in row order (empty when there is none)."""
    name = current_generation(root)
    path = Path(root) / name / passage_table.FILE if name else None
    return passage_table.read(path)[0] if path is not None and path.is_file() else ()


def fsync_tree(folder: Path) -> None:
    """Flush every file so a power cut after the rename cannot leave empty files behind."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def switch_pointer(root: Path, name: str) -> None:
    """Point readers at generation name with one atomic rename."""
    temporary = root / f".{POINTER}.{uuid.uuid4().hex[:6]}"
    temporary.write_text(name + "\n")
    os.replace(temporary, root / POINTER)


def current_generation(root: Path) -> str | None:
    pointer = Path(root) / POINTER
    return pointer.read_text().strip() if pointer.is_file() else None


def remove_old_generations(root: Path, keep: str) -> None:
    """Keep the newest few finished generations; never the one the pointer names."""
    finished = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("gen-"))
    for old in finished[:-KEEP_GENERATIONS]:
        if old.name != keep and old.name != current_generation(root):
            shutil.rmtree(old, ignore_errors=True)


def current_manifest(root: Path, name: str | None = None) -> dict | None:
    name = name or current_generation(root)
    try:
        return json.loads((Path(root) / name / "manifest.json").read_text()) if name else None
    except (OSError, ValueError):
        return None


def verify(root: Path, model: str, dimension: int) -> tuple[str, dict]:
    """Check the current generation's format, model and checksums; returns its name and manifest."""
    root = Path(root)
    fix = rebuild_hint(root)
    name = current_generation(root)
    if name is None:
        raise IndexUnavailable(f"no index found in {root}/", fix)
    manifest = current_manifest(root, name)
    if manifest is None:
        raise IndexUnavailable(f"index generation {name} has no readable manifest", fix)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexUnavailable(f"index format {manifest.get('format_version')} is not the supported "
                               f"format {FORMAT_VERSION}", fix)
    built_with = manifest.get("model", {})
    if built_with.get("name") != model or built_with.get("dimension") != dimension:
        raise IndexUnavailable(f"index was built with model {built_with.get('name')} "
                               f"({built_with.get('dimension')} dimensions) but the service uses "
                               f"{model} ({dimension} dimensions)", fix)
    for relative, expected in manifest.get("files", {}).items():
        path = root / name / relative
        if not path.is_file() or sha256_of(path) != expected:
            raise IndexUnavailable(f"index file {relative} in {name} is missing or corrupt "
                                   "(checksum mismatch)", fix)
    return name, manifest


def load(root: Path, model: str, dimension: int) -> LoadedIndex:
    """Read the current generation, checking format, model, checksums and counts."""
    import faiss

    root = Path(root)
    fix = rebuild_hint(root)
    name, manifest = verify(root, model, dimension)
    folder = root / name
    try:
        vectors_index = faiss.read_index(str(folder / "vectors.faiss"))
        sentence_index = faiss.read_index(str(folder / "sentences.faiss"))
        passages, spans, bounds = passage_table.read(folder / passage_table.FILE)
        keyword_index = keyword.load(folder / "keyword")
    except Exception as exc:  # a checksum-valid file that still fails to parse is also corruption
        raise IndexUnavailable(f"index generation {name} cannot be read ({exc})", fix) from exc
    counts = (vectors_index.ntotal, len(passages), keyword_index.scores["num_docs"])
    sentence_counts = (sentence_index.ntotal, len(spans))
    if any(count != manifest.get("passages") for count in counts) or \
            any(count != manifest.get("sentences") for count in sentence_counts):
        raise IndexUnavailable(f"index generation {name} is inconsistent: manifest says "
                               f"{manifest.get('passages')} passages, files hold {counts}", fix)
    contents = IndexContents(
        passages=passages, vectors=all_vectors(vectors_index), sentence_spans=spans,
        sentence_vectors=all_vectors(sentence_index), sentence_bounds=bounds,
        keyword_index=keyword_index, model=model, dimension=dimension)
    return LoadedIndex(generation=name, manifest=manifest, contents=contents, faiss_index=vectors_index)


def all_vectors(index) -> np.ndarray:
    """All vectors of a flat FAISS index as a numpy matrix."""
    return index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
