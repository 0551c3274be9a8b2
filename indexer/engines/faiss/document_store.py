"""documents.sqlite: where versions before the segment format (3) kept documents ingested over
HTTP. Ingested documents now live in the index itself (each segment's documents table), so a
write is published whole or not at all; this file is only read, once, by the next build, which
takes its documents into the index and then removes it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from indexer.text.documents import Document

LEGACY_FILE = "documents.sqlite"


def legacy_documents(root: Path) -> list[Document]:
    """The documents an older version's documents.sqlite holds (none when there is no such file)."""
    path = Path(root) / LEGACY_FILE
    if not path.is_file():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [Document(*row) for row in db.execute("SELECT doc_id, title, source, text FROM documents ORDER BY doc_id")]


def forget_legacy(root: Path) -> None:
    """Remove the old file once a published build holds its documents."""
    for suffix in ("", "-wal", "-shm"):
        (Path(root) / (LEGACY_FILE + suffix)).unlink(missing_ok=True)
