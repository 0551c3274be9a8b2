"""Documents that arrive over HTTP, kept durably in index/documents.sqlite beside the generations."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from indexer.documents import Document
from indexer.store import sqlite_transaction

STORE_FILE = "documents.sqlite"


class DocumentStore:
    """Ingested documents by id; every build includes them, whatever folder it reads."""

    def __init__(self, root: Path) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.path = Path(root) / STORE_FILE
        with sqlite_transaction(self.path, durable=True) as db:
            db.execute("CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, title TEXT, "
                       "source TEXT, text TEXT)")

    def put(self, documents: Sequence[Document]) -> None:
        """Add or replace documents, all or none."""
        with sqlite_transaction(self.path, durable=True) as db:
            db.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                           ((d.doc_id, d.title, d.source, d.text) for d in documents))

    def delete(self, doc_id: str) -> bool:
        with sqlite_transaction(self.path, durable=True) as db:
            return db.execute("DELETE FROM documents WHERE doc_id = ?", [doc_id]).rowcount > 0

    def all(self) -> list[Document]:
        with sqlite_transaction(self.path, durable=True) as db:
            rows = db.execute("SELECT doc_id, title, source, text FROM documents ORDER BY doc_id")
            return [Document(*row) for row in rows]
