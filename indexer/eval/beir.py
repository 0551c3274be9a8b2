"""Read a BEIR-format dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from indexer.text.documents import Document, DocumentError, document_from_record


def require(path: Path) -> Path:
    if not path.is_file():
        raise DocumentError(f"not a BEIR dataset: {path} is missing")
    return path


def read_corpus(folder: Path) -> list[Document]:
    """Every corpus record as a Document (source: the dataset name and record id)."""
    documents = []
    with open(require(Path(folder) / "corpus.jsonl"), encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                documents.append(document_from_record(
                    record, default_source=f"{Path(folder).name}:{record.get('_id')}"))
            except (json.JSONDecodeError, DocumentError) as exc:
                raise DocumentError(f"corpus.jsonl line {number}: {exc}") from exc
    return documents


def read_queries(folder: Path) -> dict[str, str]:
    with open(require(Path(folder) / "queries.jsonl"), encoding="utf-8") as handle:
        records = (json.loads(line) for line in handle if line.strip())
        return {str(r["_id"]): r["text"] for r in records}


def read_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    """query id -> {document id: relevance}; the header row and zero grades are kept as given."""
    qrels: dict[str, dict[str, int]] = {}
    with open(require(Path(folder) / "qrels" / f"{split}.tsv"), encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels
