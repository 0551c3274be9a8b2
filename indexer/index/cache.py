"""Embedding cache in index/embeddings.sqlite: vectors of a build in progress, so a killed build resumes.

The cache is derived data: a damaged file is never an error. It is set aside (renamed, with a
warning naming it) and a new one made; the worst it costs is embedding again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

from indexer.errors import WriteFailed
from indexer.model.pieces import PIECE_DIMENSION
from indexer.index.folder import sqlite_transaction

log = logging.getLogger(__name__)
CACHE_FILE = "embeddings.sqlite"
T = TypeVar("T")


def cache_problem(root: Path) -> str | None:
    """Why the cache file at root cannot be used (None: absent or whole), without changing it."""
    path = Path(root) / CACHE_FILE
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            db.execute("SELECT model, key, vector, sentences FROM vectors LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        return str(exc)
    return None if verdict == "ok" else verdict


def cache_key(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Identifies one model input: the text and the sentence spans pooled from it."""
    return hashlib.sha256(json.dumps([text, [list(s) for s in spans]]).encode()).hexdigest()


class EmbeddingCache:
    """Passage vector, sentence vectors and word pieces per (model, key); one SQLite file, safe to kill mid-write."""

    def __init__(self, root: Path, model: str, dimension: int) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.path = Path(root) / CACHE_FILE
        self.model = model
        self.dimension = dimension
        self.mended(self.create)

    def create(self) -> None:
        try:
            with sqlite_transaction(self.path) as db:
                columns = [row[1] for row in db.execute("PRAGMA table_info(vectors)")]
                if columns and "pieces" not in columns:  # a cache from before word pieces: embedded again
                    db.execute("DROP TABLE vectors")
                db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vector BLOB, "
                           "sentences BLOB, pieces BLOB, PRIMARY KEY (model, key))")
        except sqlite3.OperationalError as exc:
            raise WriteFailed(f"the embedding cache {self.path} could not be written ({exc})") from exc

    def mended(self, use: Callable[[], T]) -> T:
        """use(), and once more on a new file when the file turns out damaged (set aside first); a
        file it cannot write (a full disk, locked) is a WriteFailed."""
        try:
            return use()
        except sqlite3.DatabaseError as exc:  # not a database, malformed: not OperationalError (locked, disk)
            if isinstance(exc, sqlite3.OperationalError):
                raise WriteFailed(f"the embedding cache {self.path} could not be written ({exc})") from exc
            aside = self.path.with_name(f"{CACHE_FILE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{self.path}{suffix}").exists():
                    Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")
            log.warning("the embedding cache %s is damaged (%s): set aside as %s and started again; passages it "
                        "held are embedded again", self.path, exc, aside.name)
            self.create()
            return use()

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Cached (vector, sentence vectors, word piece codes) for the keys that are present."""

        def read() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
            found: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            with sqlite_transaction(self.path) as db:
                for first in range(0, len(keys), 500):
                    chunk = list(keys[first:first + 500])
                    rows = db.execute(f"SELECT key, vector, sentences, pieces FROM vectors WHERE model = ? AND key IN "
                                      f"({','.join('?' * len(chunk))})", [self.model, *chunk])
                    for key, vector, sentences, pieces in rows:
                        found[key] = (np.frombuffer(vector, dtype=np.float32),
                                      np.frombuffer(sentences, dtype=np.float32).reshape(-1, self.dimension),
                                      np.frombuffer(pieces, dtype=np.int8).reshape(-1, PIECE_DIMENSION))
            return found
        return self.mended(read)

    def put_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        rows = [(self.model, key, np.asarray(v, np.float32).tobytes(), np.asarray(s, np.float32).tobytes(),
                 np.asarray(p, np.int8).tobytes()) for key, v, s, p in items]

        def write() -> None:
            with sqlite_transaction(self.path) as db:
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)
        self.mended(write)

    def clear(self) -> None:
        """Forget this model's entries once a build has stored its vectors in a segment: the cache
        only carries a killed build's progress to the next one."""
        def forget() -> int:
            with sqlite_transaction(self.path) as db:
                db.execute("DELETE FROM vectors WHERE model = ?", [self.model])
                return db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        if not self.mended(forget):  # SQLite keeps the freed pages: the file would stay as large as the build made it
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
