"""What the index folder holds for its caller, whatever engine keeps the passages: the build lock
(one writer at a time across processes), SQLite transactions for the caller's own files (the
embedding cache), and engine.json, which names the engine that holds the index."""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


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
    """One writer at a time per index folder, across processes (CLI, service, merges). A writer
    that has to wait says so at once, and again when its turn comes."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".build.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is writing the index %s (a build, an ingest or a merge): waiting for it "
                     "to finish", root)
            waited = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.info("the other write finished after %.0f s; going on", time.monotonic() - waited)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


RECORD = "engine.json"


def read_record(root: Path) -> dict | None:
    """What engine.json says of the index's engine ({"engine": "milvus", "uri": ..., "collection":
    ...}); None when the folder has none."""
    try:
        return json.loads((Path(root) / RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{Path(root) / RECORD} cannot be read ({exc}); it names the index's engine") from exc


def write_record(root: Path, record: dict) -> None:
    """Replace engine.json whole (written beside, then renamed)."""
    from indexer.index.durable import write_file

    write_file(Path(root) / RECORD, json.dumps(record, indent=1) + "\n")
