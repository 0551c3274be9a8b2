"""One immutable segment on disk: passages with stable int64 ids, their vectors, keyword postings,
sentences and texts. Written once, then only read (arrays by row with pread, SQLite by id).

Row r of every array belongs to ids[r]; ids ascend, so an id finds its row by binary search.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from indexer.model import pieces as word_pieces
from indexer.model.pieces import PIECE_DIMENSION
from indexer.text import neardup
from indexer.engines.faiss import rowfile
from indexer.text.chunking import Passage
from indexer.engines.faiss.dense import ANN_FILE, DenseParams, DenseSegment, build_ann
from indexer.text.documents import StoredDocument
from indexer.engines.faiss.integrity import checksums
from indexer.text.metadata import NO_DATE, Filters, Metadata, epoch
from indexer.engines.faiss.postings import Postings
from indexer.engines.faiss.rowfile import RowFile

INFO = "segment.json"
TABLES = "segment.sqlite"
PASSAGE_FIELDS = tuple(f.name for f in fields(Passage))
COLUMNS = ", ".join(f"[{f}]" for f in PASSAGE_FIELDS)


@dataclass(frozen=True)
class SegmentRows:
    """What a new segment holds, row by row (ids ascending)."""

    ids: np.ndarray                 # (n,) int64
    doc_numbers: np.ndarray         # (n,) int64: the stable id of each row's document
    passages: Sequence[Passage]
    keys: Sequence[str]             # embedding-input keys, so a later build can reuse vectors
    vectors: np.ndarray             # (n, dim) float32, unit length
    sentence_spans: np.ndarray      # (m, 2) document offsets
    sentence_vectors: np.ndarray    # (m, dim)
    sentence_bounds: np.ndarray     # (n + 1,): row r owns sentences bounds[r]:bounds[r + 1]
    postings: Postings
    documents: Sequence[tuple[int, StoredDocument]]  # (doc number, document)
    minhashes: np.ndarray           # (n, neardup.PERMUTATIONS) uint32: each passage's MinHash signature
    piece_codes: np.ndarray | None = None   # (p, PIECE_DIMENSION) int8: word pieces (indexer/model/pieces.py)
    piece_bounds: np.ndarray | None = None  # (n + 1,): row r owns pieces bounds[r]:bounds[r + 1]


MINHASHES = "minhashes.npy"
# Each passage's word pieces for late interaction, read by row range for a search's candidates
# (segments written before them have none: see pieces()).
PIECE_CODES, PIECE_BOUNDS = "piece_codes.npy", "piece_bounds.npy"
# A second record of which documents a segment holds, beside segment.sqlite: a repair names them
# (and finds their versions in other segments) even when that file is lost. Segments written
# before it have none.
DOCUMENT_LIST = "documents.jsonl"
# metadata: the article's Metadata as JSON, or NULL (segments written before it have no such column).
DOCUMENT_COLUMNS = ("doc_number INTEGER PRIMARY KEY, doc_id TEXT, title TEXT, source TEXT, text TEXT, origin TEXT, "
                    "content_hash TEXT, metadata TEXT")


def has_metadata(db: sqlite3.Connection, schema: str = "main") -> bool:
    """Whether a segment's documents table has the metadata column."""
    return any(row[1] == "metadata" for row in db.execute(f"PRAGMA {schema}.table_info(documents)"))


def create_tables(db: sqlite3.Connection) -> None:
    db.execute(f"CREATE TABLE passages (id INTEGER PRIMARY KEY, {COLUMNS}, key TEXT)")
    db.execute(f"CREATE TABLE documents ({DOCUMENT_COLUMNS})")
    db.execute("CREATE TABLE terms (term TEXT PRIMARY KEY, start INTEGER, count INTEGER) WITHOUT ROWID")


def index_tables(db: sqlite3.Connection) -> None:
    """The id index behind filters and lookups; made after the bulk insert (faster)."""
    for column in ("doc_id", "source", "key"):
        db.execute(f"CREATE INDEX passages_{column} ON passages ([{column}])")
    db.execute("CREATE INDEX documents_doc_id ON documents (doc_id)")
    db.execute("CREATE INDEX documents_origin ON documents (origin)")  # the ingested ones, for rebuilds


def save_document_list(folder: Path, db: sqlite3.Connection) -> None:
    """DOCUMENT_LIST from the segment's documents table: number, id, origin, content hash, source."""
    with open(folder / DOCUMENT_LIST, "w", encoding="utf-8") as out:
        for number, doc_id, origin, digest, source in db.execute(
                "SELECT doc_number, doc_id, origin, content_hash, source FROM documents ORDER BY doc_number"):
            out.write(json.dumps({"number": number, "id": doc_id, "origin": origin, "content_hash": digest,
                                  "source": source}, ensure_ascii=False) + "\n")


def read_document_list(folder: Path) -> list[dict]:
    """The entries of a segment's DOCUMENT_LIST that still parse (a damaged line is skipped)."""
    found = []
    try:
        lines = (folder / DOCUMENT_LIST).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("number"), int) and isinstance(entry.get("id"), str):
            found.append(entry)
    return found


def save_postings(folder: Path, db: sqlite3.Connection, found: Postings) -> None:
    np.save(folder / "postings_rows.npy", found.rows)
    np.save(folder / "postings_tfs.npy", found.tfs)
    np.save(folder / "lengths.npy", found.lengths)
    db.executemany("INSERT INTO terms VALUES (?, ?, ?)",
                   zip(found.terms, found.starts.tolist(), found.counts.tolist()))


def write(folder: Path, rows: SegmentRows, model: str, params: DenseParams) -> dict:
    """Write a segment into an empty folder; returns its info (also written, last, as segment.json)."""
    folder.mkdir(parents=True)
    np.save(folder / "ids.npy", np.asarray(rows.ids, dtype=np.int64))
    np.save(folder / "doc_numbers.npy", np.asarray(rows.doc_numbers, dtype=np.int64))
    np.save(folder / "vectors.npy", np.asarray(rows.vectors, dtype=np.float32))
    np.save(folder / "sentence_spans.npy", np.asarray(rows.sentence_spans, dtype=np.int64).reshape(-1, 2))
    # Half precision: sentence vectors only pick the answering sentence, and they are ~5 per passage.
    np.save(folder / "sentence_vectors.npy", np.asarray(rows.sentence_vectors, dtype=np.float16))
    np.save(folder / "sentence_bounds.npy", np.asarray(rows.sentence_bounds, dtype=np.int64))
    np.save(folder / MINHASHES, np.asarray(rows.minhashes, dtype=np.uint32))
    if rows.piece_codes is not None:
        np.save(folder / PIECE_CODES, np.asarray(rows.piece_codes, dtype=np.int8).reshape(-1, PIECE_DIMENSION))
        np.save(folder / PIECE_BOUNDS, np.asarray(rows.piece_bounds, dtype=np.int64))
    with sqlite3.connect(folder / TABLES) as db:
        create_tables(db)
        db.executemany(f"INSERT INTO passages VALUES (?, {', '.join('?' * len(PASSAGE_FIELDS))}, ?)",
                       ((int(i), *(getattr(p, f) for f in PASSAGE_FIELDS), key)
                        for i, p, key in zip(rows.ids, rows.passages, rows.keys)))
        db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       ((number, d.document.doc_id, d.document.title, d.document.source, d.document.text,
                         d.origin, d.content_hash, d.document.metadata.to_json()) for number, d in rows.documents))
        save_postings(folder, db, rows.postings)
        index_tables(db)
        save_document_list(folder, db)
    db.close()
    return finish(folder, model, len(rows.ids), len(rows.documents), params)


def finish(folder: Path, model: str, passages: int, documents: int, params: DenseParams) -> dict:
    """Add the approximate index when the segment is large, then write segment.json last."""
    vectors = RowFile(folder / "vectors.npy")  # read in blocks: a merge inside the server stays small
    ann = build_ann(vectors, folder / ANN_FILE, params) if passages >= params.ann_min_rows else None
    vectors.close()
    info = {"name": folder.name, "model": model, "dimension": int(vectors.shape[1]), "passages": passages,
            "sentences": len(RowFile(folder / "sentence_spans.npy")),
            "documents": documents, "ann": ann, "files": checksums(folder),
            **({"pieces": word_pieces.PIECES_FORMAT} if (folder / PIECE_CODES).is_file() else {})}
    (folder / INFO).write_text(json.dumps(info, indent=1))
    return info


class Segment:
    """An open segment: per-row arrays in RAM, the rest read by row or id when a query needs it."""

    def __init__(self, folder: Path, info: dict, params: DenseParams = DenseParams()) -> None:
        self.folder, self.info, self.name = folder, info, info["name"]
        # In RAM: what every query touches row by row (8 + 8 + 4 bytes a passage).
        self.ids = rowfile.load(folder / "ids.npy")
        self.doc_numbers = rowfile.load(folder / "doc_numbers.npy")
        self.lengths = rowfile.load(folder / "lengths.npy")
        # On disk, read by range: a query term's postings, a result's sentences.
        self.postings_rows = RowFile(folder / "postings_rows.npy")
        self.postings_tfs = RowFile(folder / "postings_tfs.npy")
        self.sentence_spans = RowFile(folder / "sentence_spans.npy")
        self.sentence_vectors = RowFile(folder / "sentence_vectors.npy")
        self.sentence_bounds = RowFile(folder / "sentence_bounds.npy")
        self.dense = DenseSegment(folder, info.get("ann"), params)
        # Near-duplicate signatures, read by row for the hits of a collapse=story query (segments
        # written before them have none: see signatures()).
        self.minhashes = RowFile(folder / MINHASHES) if (folder / MINHASHES).is_file() else None
        held = info.get("pieces") == word_pieces.PIECES_FORMAT and (folder / PIECE_CODES).is_file() \
            and (folder / PIECE_BOUNDS).is_file()  # made the way this code makes them
        self.piece_codes = RowFile(folder / PIECE_CODES) if held else None
        self.piece_bounds = rowfile.load(folder / PIECE_BOUNDS) if held else None  # 8 bytes a passage
        # Read-only, shared by the threads of one process (SQLite serializes access itself). The file
        # never changes once the segment is published, so SQLite is told so (immutable): it then
        # takes no file locks and checks for no journal on each read, a dozen system calls a query.
        self.db = sqlite3.connect(f"file:{folder / TABLES}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        # A connection sits in a reference cycle with its statement cache, so only the cyclic
        # collector would free it, long after the segment: a server held dozens of removed
        # segments' files open. Closed as soon as no snapshot holds the segment instead.
        weakref.finalize(self, self.db.close)
        self.has_metadata = has_metadata(self.db)

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the ids this segment holds (others are dropped)."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, ids)
        found = rows < len(self.ids)
        found[found] = self.ids[rows[found]] == ids[found]
        return rows[found]

    def postings(self, terms: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, term frequencies, bounds): the rows holding terms[i] are rows[bounds[i]:bounds[i + 1]]
        (none for a term the segment lacks), with their frequencies in the same places. One lookup
        and one read of each file for all the terms."""
        where: dict[str, tuple[int, int]] = {}
        for first in range(0, len(terms), 500):
            part = list(terms[first:first + 500])
            where.update((term, (start, count)) for term, start, count in self.db.execute(
                f"SELECT term, start, count FROM terms WHERE term IN ({','.join('?' * len(part))})", part))
        starts = np.array([where.get(term, (0, 0))[0] for term in terms], dtype=np.int64)
        counts = np.array([where.get(term, (0, 0))[1] for term in terms], dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        starts, counts = starts[counts > 0], counts[counts > 0]
        return self.postings_rows.runs(starts, counts), self.postings_tfs.runs(starts, counts), bounds

    def select_ids(self, column: str, values: Sequence[str]) -> np.ndarray:
        """Ids of the passages whose doc_id or source is one of values (through the SQLite index)."""
        assert column in ("doc_id", "source")
        found: list[int] = []
        for first in range(0, len(values), 500):
            part = list(values[first:first + 500])
            found += [i for (i,) in self.db.execute(
                f"SELECT id FROM passages WHERE [{column}] IN ({','.join('?' * len(part))})", part)]
        return np.array(sorted(found), dtype=np.int64)

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        """The MinHash signatures of these rows (computed from their text in a segment written
        before signatures were kept)."""
        if self.minhashes is not None:
            return self.minhashes.take(np.asarray(rows, dtype=np.int64))
        texts = self.passages(self.ids[rows].tolist())
        return neardup.signatures([texts[int(i)].text for i in self.ids[rows]])

    def sections(self, ids: Sequence[int]) -> dict[int, str]:
        """The section heading of each of these passages (those this segment holds)."""
        found = {}
        for first in range(0, len(ids), 500):
            part = [int(i) for i in ids[first:first + 500]]
            found.update(self.db.execute(f"SELECT id, section FROM passages WHERE id IN ({','.join('?' * len(part))})",
                                         part))
        return found

    def passages(self, ids: Sequence[int]) -> dict[int, Passage]:
        """The passages with these ids (those this segment holds)."""
        found = {}
        for first in range(0, len(ids), 500):
            part = [int(i) for i in ids[first:first + 500]]
            for row in self.db.execute(f"SELECT id, {COLUMNS} FROM passages WHERE id IN "
                                       f"({','.join('?' * len(part))})", part):
                found[row[0]] = Passage(*row[1:])
        return found

    def sentences(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Document offsets (k, 2) and float32 vectors (k, dim) of one row's sentences."""
        first, last = (int(x) for x in self.sentence_bounds[row:row + 2])
        return self.sentence_spans[first:last], self.sentence_vectors[first:last].astype(np.float32)

    @cached_property
    def published(self) -> np.ndarray:
        """Each row's article publication time in epoch seconds (NO_DATE: none), read once from the
        documents table (a loop over documents, never over passages) when a query first needs it."""
        times = np.full(len(self.ids), NO_DATE, dtype=np.int64)
        if not self.has_metadata:
            return times
        dated = [(number, epoch(at)) for number, at in self.db.execute(
            "SELECT doc_number, json_extract(metadata, '$.published_at') FROM documents "
            "WHERE metadata IS NOT NULL AND json_extract(metadata, '$.published_at') IS NOT NULL")]
        if dated:
            numbers, stamps = (np.array(column, dtype=np.int64) for column in zip(*sorted(dated)))
            at = np.minimum(np.searchsorted(numbers, self.doc_numbers), len(numbers) - 1)
            found = numbers[at] == self.doc_numbers
            times[found] = stamps[at[found]]
        return times

    def rows_matching(self, filters: Filters) -> np.ndarray | None:
        """Rows whose article passes filters' time and metadata fields (None: they set none)."""
        rows = None
        if filters.dated:
            keep = self.published != NO_DATE
            if filters.published_after is not None:
                keep &= self.published >= filters.published_after
            if filters.published_before is not None:
                keep &= self.published < filters.published_before
            rows = np.flatnonzero(keep)
        if filters.by_metadata:
            numbers: list[int] = []
            if self.has_metadata:
                condition, params = metadata_condition(filters)
                numbers = [n for (n,) in self.db.execute(f"SELECT doc_number FROM documents WHERE {condition}", params)]
            found = np.flatnonzero(np.isin(self.doc_numbers, np.array(numbers, dtype=np.int64)))
            rows = found if rows is None else np.intersect1d(rows, found)
        return rows

    def metadata(self, doc_numbers: Sequence[int]) -> dict[int, Metadata]:
        """The metadata of these documents (those with any)."""
        found: dict[int, Metadata] = {}
        if not self.has_metadata:
            return found
        numbers = sorted({int(n) for n in doc_numbers})
        for first in range(0, len(numbers), 500):
            part = numbers[first:first + 500]
            for number, text in self.db.execute(
                    f"SELECT doc_number, metadata FROM documents WHERE metadata IS NOT NULL AND doc_number IN "
                    f"({','.join('?' * len(part))})", part):
                found[number] = Metadata.from_json(text)
        return found

    def documents(self, doc_ids: Sequence[str] | None = None) -> Iterator[tuple[int, str, str, str]]:
        """(doc number, doc_id, origin, content hash) of every document here, or of those with the given ids."""
        query = "SELECT doc_number, doc_id, origin, content_hash FROM documents"
        batches = [None] if doc_ids is None else [list(doc_ids[i:i + 500]) for i in range(0, len(doc_ids), 500)]
        for part in batches:
            where = "" if part is None else f" WHERE doc_id IN ({','.join('?' * len(part))})"
            yield from self.db.execute(query + where, part or [])

    def pieces(self, rows: np.ndarray) -> list[np.ndarray] | None:
        """Each row's word piece codes (int8, (k, PIECE_DIMENSION)); None when the segment has none."""
        if self.piece_codes is None:
            return None
        starts = self.piece_bounds[rows]
        counts = self.piece_bounds[np.asarray(rows) + 1] - starts
        read = self.piece_codes.runs(starts, counts)  # every row's range in one read
        return np.split(read, np.cumsum(counts)[:-1]) if len(counts) else []

    def vectors_by_key(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(vector, sentence vectors, word piece codes or None) already stored for these embedding-input keys."""
        found = {}
        for first in range(0, len(keys), 500):
            part = list(keys[first:first + 500])
            for key, passage_id in self.db.execute(
                    f"SELECT key, id FROM passages WHERE key IN ({','.join('?' * len(part))})", part):
                row = int(self.rows_of(np.array([passage_id]))[0])
                pieces = self.pieces(np.array([row]))
                found[key] = (np.asarray(self.dense.vectors[row]), self.sentences(row)[1], pieces and pieces[0])
        return found

    def close(self) -> None:
        self.db.close()
        for rows in (self.postings_rows, self.postings_tfs, self.sentence_spans, self.sentence_vectors,
                     self.sentence_bounds, self.dense.vectors, self.minhashes, self.piece_codes):
            if isinstance(rows, RowFile):
                rows.close()


def metadata_condition(filters: Filters) -> tuple[str, list[str]]:
    """SQL over a segment's documents table (its metadata JSON) for filters' outlets, authors,
    languages and tags, and its parameters."""
    clauses, params = ["metadata IS NOT NULL"], []

    def marks(values: tuple[str, ...]) -> str:
        params.extend(v.strip().lower() for v in values)
        return ",".join("?" * len(values))

    if filters.outlets:
        clauses.append(f"lower(json_extract(metadata, '$.outlet')) IN ({marks(filters.outlets)})")
    if filters.languages:
        clauses.append(f"(lower(json_extract(metadata, '$.language')) IN ({marks(filters.languages)}) OR "
                       f"substr(lower(json_extract(metadata, '$.language')), 1, instr(json_extract(metadata, "
                       f"'$.language') || '-', '-') - 1) IN ({marks(filters.languages)}))")
    for name, values in (("authors", filters.authors), ("tags", filters.tags)):
        if values:
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(metadata, '$.{name}') WHERE lower(value) IN "
                           f"({marks(values)}))")
    return " AND ".join(clauses), params
