"""The storage seam: what search and build need from an index engine, whichever engine it is.

Callers construct an Engine with open_engine and name nothing inside it. search.py ranks, fuses
and highlights through the IndexReader it opens; build.py prepares documents (chunked and
embedded) and hands them to its IndexWriter.apply; the service polls current() and runs
maintain() in the background. FAISS segments in the index folder (indexer/engines/faiss/) and
Milvus collections (indexer/engines/milvus/) are the two implementations; no engine's types
cross this line. Passages are named by stable int64 ids that the engine hands out and never
reuses. Ingested documents are stored by the engine with their passages (so a publish is the one
commit); the index folder's build lock, embedding cache and engine.json (which engine holds the
index, and where) belong to the caller, whatever the engine.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from indexer.text.chunking import Passage
from indexer.text.documents import Document, StoredDocument
from indexer.engines import ENGINES  # the registry: names -> "module:class"
from indexer.errors import IndexDamaged, IndexUnavailable, WriteFailed, fix_command  # noqa: F401 (importers name them here)
from indexer.index.folder import RECORD, read_record, write_record
from indexer.text.metadata import Filters, Metadata


@dataclass(frozen=True)
class Damage:
    """What an engine found wrong with an index, and what of the damaged parts can be read back."""

    problems: tuple[str, ...] = ()               # each names the damaged file or part; () = intact
    recoverable: tuple[StoredDocument, ...] = ()  # live documents of damaged parts, read back whole
    lost: tuple[str, ...] = ()                   # documents ingested over HTTP that nothing holds whole
    lost_from_folders: tuple[str, ...] = ()      # folder documents that only a reindex of their folder restores
    model: str | None = None                     # the model the surviving index records
    plan: object = None                          # the engine's own plan of the repair (opaque to callers)
    newer: str | None = None                     # a whole snapshot newer than the one served (a write cut off
    # before it was published, or a power cut that rolled the pointer back): a repair serves it

    @property
    def intact(self) -> bool:
        return not self.problems

    def rolled_back(self, served: str | None) -> str | None:
        """The warning for a newer whole snapshot than the one served, or None."""
        if self.newer is None:
            return None
        return (f"CURRENT names {served}, but {self.newer} is newer and whole: a write was cut off before it "
                f"was published, or a power cut rolled CURRENT back; `repair` serves {self.newer}")


@dataclass(frozen=True)
class StoredPassage:
    """What a page of results needs of one passage: its text and source, and its sentences."""

    id: int
    passage: Passage
    sentence_spans: np.ndarray     # (k, 2) document offsets
    sentence_vectors: np.ndarray   # (k, dim) float32, unit length
    metadata: Metadata = Metadata()  # its article's


@dataclass(frozen=True)
class KeptDocument:
    """A document as the index serves it: the text as kept, where it came from, its passages."""

    document: Document
    origin: str  # "folder" or "api"
    passages: tuple[Passage, ...]

    def record(self) -> dict:
        """The JSON form, shared by GET /documents/{doc_id} and `semsearch show`."""
        d = self.document
        return {"doc_id": d.doc_id, "title": d.title, "source": d.source, "origin": self.origin, "text": d.text,
                **d.metadata.record(), "passages": [{"passage_id": p.passage_id, "text": p.text, "section": p.section,
                                                      "paragraph": p.paragraph, "start": p.start, "end": p.end}
                                                     for p in self.passages]}


@dataclass(frozen=True)
class PreparedDocument:
    """A document chunked and embedded, ready for an engine to store."""

    stored: StoredDocument
    passages: tuple[Passage, ...]
    keys: tuple[str, ...]             # one per passage: identifies its embedding input
    vectors: np.ndarray               # (passages, dim)
    sentence_spans: np.ndarray        # (sentences, 2)
    sentence_vectors: np.ndarray      # (sentences, dim)
    sentence_counts: tuple[int, ...]  # sentences of each passage, in order
    pieces: tuple[np.ndarray, ...] = ()  # per passage: its word pieces' int8 codes (indexer/model/pieces.py)


@dataclass(frozen=True)
class ChangeSet:
    """Documents to add or replace (by doc_id) and doc_ids to delete, applied all together.

    upserts come in batches, so a large build never holds every vector at once: an engine may
    store each batch as it arrives, but readers see nothing until the whole change is applied.
    """

    upserts: Iterable[Sequence[PreparedDocument]] = ()
    deletes: Sequence[str] = ()
    replace_all: bool = False   # drop every document not upserted (a full rebuild)
    chunker: str | None = None  # fingerprint of how the passages were cut
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LiveDocument:
    """A document the index serves: its stable number, origin and content hash."""

    doc_id: str
    number: int
    origin: str
    content_hash: str


@dataclass(frozen=True)
class Selection:
    """Passages a filter allows, as the engine resolved it (opaque to callers)."""

    parts: dict
    size: int


@dataclass(frozen=True)
class IndexInfo:
    """What an index reports of a snapshot: a reader's own, or the newest one a writer sees."""

    generation: str | None        # None: no usable snapshot yet
    model: str | None = None      # the model's name with its precision
    chunker: str | None = None    # fingerprint of how the passages were cut (build.chunker_fingerprint)
    documents: int = 0
    passages: int = 0
    sentences: int = 0
    segments: int | None = None   # FAISS segments; None for an engine that keeps none (Milvus)
    built_at: str | None = None   # ISO time the snapshot was published

    def record(self) -> dict:
        """The JSON form (for /readyz)."""
        return {"generation": self.generation, "model": self.model, "passages": self.passages,
                "documents": self.documents, "segments": self.segments, "built_at": self.built_at}


class IndexReader(Protocol):
    """One consistent snapshot of an index, as search sees it."""

    generation: str
    info: IndexInfo
    remote: bool  # searches wait on another process (a server): never run them on an event loop

    def select(self, filters: Filters) -> Selection: ...

    def published(self, ids: Sequence[int]) -> np.ndarray:
        """Publication time (epoch seconds; metadata.NO_DATE: none) of each passage id's article."""

    def describe(self, ids: Sequence[int]) -> dict[int, tuple[int, Metadata, str]]:
        """Document number, article metadata and section heading of each passage id (for facets)."""

    def signatures(self, ids: Sequence[int]) -> np.ndarray:
        """Near-duplicate signature (indexer/text/neardup.py) of each passage id, (len(ids), PERMUTATIONS)."""

    # described=True: the search will ask documents_of, published, signatures or describe about
    # what the lists find (grouping, collapsing, facets, dates); an engine whose every call is a
    # round trip (Milvus) brings those fields back with the lists, a local one ignores it.
    def dense(self, vector: np.ndarray, depth: int, selection: Selection | None = None,
              exact: bool = False, described: bool = False) -> list[tuple[int, float]]: ...

    def keyword(self, terms: list[str], depth: int, selection: Selection | None = None,
                described: bool = False) -> list[tuple[int, float]]: ...

    def term_weights(self, terms: list[str]) -> dict[str, float]: ...

    def documents_of(self, ids: Sequence[int]) -> dict[int, int]: ...

    def fetch(self, ids: Sequence[int]) -> dict[int, StoredPassage]: ...

    def pieces(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Each passage id's word piece codes for late interaction (int8, (k, PIECE_DIMENSION));
        passages stored without them are left out."""

    def document(self, doc_id: str) -> KeptDocument | None:
        """The live document with this id as kept, or None."""

    def document_ids(self, offset: int, limit: int) -> tuple[int, list[tuple[str, str, str, str]]]:
        """How many live documents there are, and (doc_id, title, source, origin) of a page of
        them in doc_id order."""


class IndexWriter(Protocol):
    """Applies change sets; each apply is atomic and leaves a snapshot readers can open."""

    def live_documents(self, doc_ids: Sequence[str] | None = None) -> dict[str, LiveDocument]: ...

    def ingested_documents(self) -> list[Document]:
        """Documents added over the API that the newest snapshot serves, with their text (the
        index is their only store: publishing is the one commit). Whatever model built it."""

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(vector, sentence vectors, word piece codes or None: stored before them) already held
        for these embedding-input keys."""

    def apply(self, changes: ChangeSet) -> str:
        """Publish the change as one new snapshot and return its name; all or nothing: a write that
        fails raises OSError (WriteFailed, or the OS's own, such as a full disk's) with nothing
        published."""

    def health(self) -> IndexInfo:
        """The newest usable snapshot (generation None: none yet, or none for this model)."""


class Engine(Protocol):
    """One index as its users see it: snapshots to search, a writer, and the engine's upkeep."""

    def current(self) -> str | None:
        """The name of the newest published snapshot (cheap: polled by the service), or None."""

    @staticmethod
    def recorded_model(root: Path, **options) -> dict | None:
        """The model the index at root records, {"name": with its precision, "dimension"} (None:
        no index yet), read without opening the index."""

    def describe(self) -> dict:
        """What the index folder's engine.json records: {"engine": name, ...where it lives}."""

    def reader(self) -> IndexReader:
        """The newest snapshot, opened and checked; raises IndexUnavailable."""

    def writer(self) -> IndexWriter:
        """The writing side; callers hold the index folder's build lock while applying."""

    def prepare(self) -> None:
        """Do the slow part of opening the next snapshot now, outside any lock (may do nothing)."""

    def maintain(self) -> list[str]:
        """Background upkeep (merging small segments, compaction); returns what was done, in words."""

    def release(self, serving: IndexReader) -> None:
        """Forget whatever only snapshots older than `serving` used."""

    def inspect(self) -> Damage:
        """Check everything loading checks, and look past the first problem: which parts are
        damaged and which of their documents and vectors can still be read back whole."""

    def close(self) -> None:
        """Let go of connections and files this process holds (Milvus Lite serves one process at
        a time); the engine opens them again when next used."""

    def repairer(self, damage: Damage) -> IndexWriter:
        """A writer whose next apply publishes the index without its damaged parts (plus whatever
        that change set upserts: the recovered documents), in one commit; its embedded() also
        gives the vectors of the damaged parts that were read back from intact files."""


class EngineCalls:
    """The calls engines made in this process, by engine and operation: Milvus's are round trips
    to its server (or Milvus Lite), FAISS's the reader operations a search makes in process. The
    service shows them in /metrics (semsearch_engine_calls_total)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seconds: Counter[tuple[str, str]] = Counter()  # time spent in them: how much of a search is the engine's

    def add(self, engine: str, operation: str, seconds: float = 0.0) -> None:
        with self.lock:
            self.counts[(engine, operation)] += 1
            self.seconds[(engine, operation)] += seconds

    def snapshot(self) -> dict[tuple[str, str], tuple[int, float]]:
        """(calls, seconds) by (engine, operation)."""
        with self.lock:
            return {key: (count, self.seconds[key]) for key, count in self.counts.items()}

    @contextmanager
    def timing(self, engine: str, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(engine, operation, time.perf_counter() - started)


ENGINE_CALLS = EngineCalls()


def counted(engine: str):
    """Count each call of the decorated reader method in ENGINE_CALLS, under its name."""

    def decorate(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            with ENGINE_CALLS.timing(engine, method.__name__):
                return method(self, *args, **kwargs)

        return call

    return decorate


def engine_class(kind: str):
    if kind not in ENGINES:
        raise ValueError(f"unknown index engine {kind!r}; use one of {', '.join(ENGINES)}")
    module, name = ENGINES[kind].split(":")
    return getattr(importlib.import_module(module), name)


class EngineMismatch(ValueError):
    """The engine (or Milvus URI) asked for is not the one that holds the index."""


def engine_kind(root: Path, kind: str | None = None, uri: str | None = None) -> str:
    """The engine of the index at root: what its engine.json records (a folder without one but with
    a FAISS index is FAISS's), else kind, else faiss. Raises EngineMismatch when kind (or the
    Milvus URI) differs from what the index records, and ValueError for an unknown kind."""
    if kind is not None:
        engine_class(kind)
    if Path(root).exists() and not Path(root).is_dir():
        raise IndexUnavailable(f"{root} is a file; an index is a folder",
                               fix_command("index", "FOLDER", "--out", Path(f"{root}-index"),
                                           note="FOLDER: the folder of your articles"))
    try:
        record = read_record(root)
    except ValueError as exc:
        raise IndexDamaged(str(exc), fix_command("repair", Path(root))) from None
    recorded = (record or {}).get("engine") or ("faiss" if engine_class("faiss").recorded_model(Path(root)) else None)
    if kind is not None and recorded is not None and kind != recorded:
        raise EngineMismatch(f"the index at {root} is held by the {recorded} engine, not {kind}: leave out "
                             f"--engine (and SEMSEARCH_ENGINE) to use it, or give another index folder for a "
                             f"{kind} index")
    if uri and record and record.get("uri") and uri != record["uri"]:
        raise EngineMismatch(f"the index at {root} is in Milvus at {record['uri']}, not {uri}: leave out "
                             "--milvus-uri (and SEMSEARCH_MILVUS_URI), or give another index folder")
    return recorded or kind or "faiss"


def mend_record(root: Path, kind: str | None = None, uri: str | None = None) -> str | None:
    """Write engine.json again when it cannot be read and the folder's files show the engine (a
    FAISS index's generations, or Milvus Lite's milvus.db), or kind names it; the engine written,
    or None when the record reads. Raises IndexDamaged when nothing shows which engine holds it."""
    try:
        read_record(root)
        return None
    except ValueError as exc:
        problem = str(exc)
    root = Path(root)
    found = kind or ("faiss" if engine_class("faiss").recorded_model(root) else
                     "milvus" if (root / "milvus.db").exists() or uri else None)
    if found is None:
        raise IndexDamaged(f"{problem}, and nothing in the folder shows which engine holds the index (a Milvus "
                           "server's index keeps only this file here): give its engine and address with "
                           "--engine milvus --milvus-uri", fix_command("repair", root, "--engine", "milvus", "--milvus-uri",
                                                                "http://HOST:19530", note="HOST: the Milvus server"))
    (root / RECORD).unlink(missing_ok=True)
    engine = engine_class(found)(root, "", 0, **({"uri": uri} if uri else {}))
    write_record(root, engine.describe())
    return found


def open_engine(root: Path, model: str, dimension: int, kind: str | None = None, **options) -> Engine:
    """The engine of the index at root (see engine_kind), for vectors of this model and dimension.
    options (None: not given) go to the engine: ann_min_rows (FAISS), uri, token (Milvus)."""
    options = {k: v for k, v in options.items() if v is not None}
    chosen = engine_kind(Path(root), kind, options.get("uri"))
    return engine_class(chosen)(Path(root), model, dimension, **options)


def remember(root: Path, engine: Engine) -> None:
    """Record in the index folder which engine holds the index (on its first write)."""
    record = engine.describe()
    if read_record(root) != record:
        write_record(root, record)


def recorded_model(root: Path, kind: str | None = None, **options) -> dict | None:
    """{"name", "dimension"} of the model the index at root was built with (the name with its
    precision); None when there is no index yet. Read before any model is loaded."""
    options = {k: v for k, v in options.items() if v is not None}
    return engine_class(engine_kind(Path(root), kind, options.get("uri"))).recorded_model(Path(root), **options)


def built_with(root: Path, kind: str | None = None, **options) -> str | None:
    """The name of the model (with its precision) the index at root was built with; None when
    there is no index yet. Read before a model is loaded, so an index keeps its precision."""
    return (recorded_model(root, kind, **options) or {}).get("name")
