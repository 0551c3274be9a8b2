"""Embedding cache in index/embeddings.sqlite: vectors of a build in progress, so a killed build resumes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from indexer.folder import sqlite_transaction

CACHE_FILE = "embeddings.sqlite"


def cache_key(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Identifies one model input: the text and the sentence spans pooled from it."""
    return hashlib.sha256(json.dumps([text, [list(s) for s in spans]]).encode()).hexdigest()


class EmbeddingCache:
    """Passage vector plus sentence vectors per (model, key); one SQLite file, safe to kill mid-write."""

    def __init__(self, root: Path, model: str, dimension: int) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.path = Path(root) / CACHE_FILE
        self.model = model
        self.dimension = dimension
        with sqlite_transaction(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vector BLOB, "
                       "sentences BLOB, PRIMARY KEY (model, key))")

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Cached (vector, sentence vectors) for the keys that are present."""
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with sqlite_transaction(self.path) as db:
            for first in range(0, len(keys), 500):
                chunk = list(keys[first:first + 500])
                rows = db.execute(f"SELECT key, vector, sentences FROM vectors WHERE model = ? AND key IN "
                                  f"({','.join('?' * len(chunk))})", [self.model, *chunk])
                for key, vector, sentences in rows:
                    found[key] = (np.frombuffer(vector, dtype=np.float32),
                                  np.frombuffer(sentences, dtype=np.float32).reshape(-1, self.dimension))
        return found

    def put_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> None:
        with sqlite_transaction(self.path) as db:
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                           ((self.model, key, np.asarray(v, np.float32).tobytes(),
                             np.asarray(s, np.float32).tobytes()) for key, v, s in items))

    def clear(self) -> None:
        """Forget this model's entries once a build has stored its vectors in a segment: the cache
        only carries a killed build's progress to the next one."""
        with sqlite_transaction(self.path) as db:
            db.execute("DELETE FROM vectors WHERE model = ?", [self.model])
            left = db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        if not left:  # SQLite keeps the freed pages: the file would stay as large as the build made it
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
