"""passages.sqlite inside a generation: passages, their sentence spans, and the documents they came from."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.chunking import Passage
from indexer.documents import Document

FILE = "passages.sqlite"
PASSAGE_FIELDS = ("passage_id", "doc_id", "title", "source", "section", "paragraph", "start", "end", "text")
COLUMNS = ", ".join(f"[{f}]" for f in PASSAGE_FIELDS)


@dataclass(frozen=True)
class StoredDocument:
    """A document as a generation recorded it: where it came from and its content hash."""

    document: Document
    origin: str  # "folder" or "api"
    content_hash: str


def content_hash(document: Document) -> str:
    return hashlib.sha256("\x00".join((document.title, document.source, document.text)).encode()).hexdigest()


def write(path: Path, passages: Sequence[Passage], sentence_spans: np.ndarray, sentence_bounds: np.ndarray,
          documents: Sequence[StoredDocument]) -> None:
    """Create the file (a new generation's, so no journal mode and no readers to care about)."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(f"CREATE TABLE passages (row INTEGER PRIMARY KEY, {COLUMNS})")
        db.execute("CREATE TABLE sentences (row INTEGER PRIMARY KEY, start INTEGER, [end] INTEGER)")
        db.execute("CREATE TABLE sentence_bounds (row INTEGER PRIMARY KEY, first INTEGER)")
        db.execute("CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT, source TEXT, text TEXT, "
                   "origin TEXT, content_hash TEXT)")
        db.executemany(f"INSERT INTO passages VALUES (?, {', '.join('?' * len(PASSAGE_FIELDS))})",
                       ((i, *(getattr(p, f) for f in PASSAGE_FIELDS)) for i, p in enumerate(passages)))
        db.executemany("INSERT INTO sentences VALUES (?, ?, ?)",
                       ((i, int(s), int(e)) for i, (s, e) in enumerate(sentence_spans)))
        db.executemany("INSERT INTO sentence_bounds VALUES (?, ?)", enumerate(int(b) for b in sentence_bounds))
        db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                       ((d.document.doc_id, d.document.title, d.document.source, d.document.text,
                         d.origin, d.content_hash) for d in documents))


def read(path: Path) -> tuple[tuple[Passage, ...], np.ndarray, np.ndarray]:
    """Passages in row order, sentence spans (m, 2) and sentence bounds (n + 1,)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        passages = tuple(Passage(*row) for row in db.execute(f"SELECT {COLUMNS} FROM passages ORDER BY row"))
        spans = np.array(db.execute("SELECT start, [end] FROM sentences ORDER BY row").fetchall(),
                         dtype=np.int64).reshape(-1, 2)
        bounds = np.array([b for (b,) in db.execute("SELECT first FROM sentence_bounds ORDER BY row")],
                          dtype=np.int64)
    return passages, spans, bounds


def read_documents(path: Path) -> dict[str, StoredDocument]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT doc_id, title, source, text, origin, content_hash FROM documents")
        return {row[0]: StoredDocument(Document(*row[:4]), row[4], row[5]) for row in rows}
