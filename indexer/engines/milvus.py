"""The Milvus engine: an index in Milvus collections, embedded (Milvus Lite: a local path ending in
.db) or on a Milvus server or cluster (http(s)://host:port).

An index is a state collection and, per build, four more (NAME is the index's collection name):

- NAME_state: one row, the commit point: the generation searches read, the build they read it in,
  the model, the chunker, the counts and the id counters. Upserting it publishes a change.
- NAME_bN_passages: a row per passage: its stable id, text, the terms BM25 scores (indexer/
  keyword.py: passage_terms, pre-analysed, so both engines score the same words) and the sparse
  vector Milvus's BM25 function makes of them, the dense vector, the article metadata the filters
  use, sentence spans, near-duplicate signature, and `born` / `died`: the generation that added it
  and the one that replaced or deleted it. A search at generation G reads born <= G < died.
- NAME_bN_sentences: each passage's sentence vectors (for marking the answer), keyed by passage.
- NAME_bN_terms: each term's document frequency (for the share of a query's keyword weight that
  a passage holds), as of the write that last changed it and before it.
- NAME_bN_documents: the documents as kept (their text in parts), with born / died.

A change adds rows born at the next generation and marks the rows it replaces as dying there, then
flushes and commits the state: until that upsert, searches see none of it, so a failed write
changes nothing a search sees, and the next writer removes what a failed one left. A full rebuild
(or another model) writes a new build's collections and switches the state to them. Dense and
BM25 lists come from Milvus, filtered inside the engine; fusion, relevance, grouping, highlighting,
facets and collapse stay in search.py, so a query ranks the same way on every engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from indexer import neardup
from indexer.chunking import Passage
from indexer.documents import Document, StoredDocument, content_hash
from indexer.errors import EngineUnreachable, fix_command
from indexer.engine import (ChangeSet, Damage, IndexDamaged, IndexReader, IndexUnavailable, KeptDocument,
                            LiveDocument, PreparedDocument, Selection, StoredPassage)
from indexer.folder import read_record
from indexer.keyword import KeywordParams, bm25, idf, passage_terms
from indexer.metadata import NO_DATE, Filters, Metadata, epoch

log = logging.getLogger(__name__)
# gRPC's C core prints notices on stderr (a fork while its threads run, for one); errors still show
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# Milvus Lite logs its server's start, stop and index builds, and a traceback for a file another
# process holds; connect() says that in one line
logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # Milvus Lite lacks AllocTimestamp; clients cope
ALIVE = 2 ** 62           # died of a live row
TEXT_PART = 16_000        # characters of a document's text per row (a VARCHAR holds 65,535 bytes)
PARTS = 4096              # a document row's key: number * PARTS + part
INSERT_ROWS = 256         # rows per insert call
IN_VALUES = 1000          # values per `in [...]` list
QUERY_LIMIT = 16_384      # rows per query call (Milvus's limit)
FILTER_BYTES = 512        # longest metadata value kept for filtering
KEYWORD = KeywordParams()
LITE_ATTEMPTS = 6  # tries to open a Milvus Lite file, half a second apart
FIX = "check that Milvus is running and SEMSEARCH_MILVUS_URI / --milvus-uri names it"


def default_uri(root: Path) -> str:
    """Milvus Lite in the index folder."""
    return str(Path(root).resolve() / "milvus.db")


def collection_name(root: Path) -> str:
    """A collection name for the index folder: letters, digits and underscores."""
    name = re.sub(r"\W", "_", Path(root).resolve().name or "index")
    return ("semsearch_" + name)[:200]


_clients: dict[tuple[str, str], object] = {}


def connect(uri: str, token: str | None):
    """One client per URI in a process (Milvus Lite lets one process open its file)."""
    key = (uri, token or "")
    if key not in _clients:
        from pymilvus import MilvusClient

        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        attempts = LITE_ATTEMPTS if "://" not in uri else 1
        for attempt in range(1, attempts + 1):
            try:
                _clients[key] = MilvusClient(uri=uri, token=token or "", timeout=10)
                break
            except Exception as failure:  # pymilvus raises its own types
                exc = failure
                if attempt < attempts:
                    time.sleep(0.5)  # a Milvus Lite server of this file may be stopping (a process closing it)
        else:
            if "://" not in uri and locked(Path(uri) / "LOCK"):
                raise EngineUnreachable(f"the Milvus Lite file {uri} is open in another process (a running "
                                        "`semsearch serve`?); Milvus Lite serves one process at a time",
                                        "stop that process, send the change to it over HTTP, or use a Milvus "
                                        "server (SEMSEARCH_MILVUS_URI=http://host:19530)") from exc
            raise EngineUnreachable(f"Milvus at {uri} cannot be reached: {reason(exc)}", FIX) from exc
    return _clients[key]


def disconnect(uri: str, token: str | None) -> None:
    """Close the process's client for uri (Milvus Lite then releases its file)."""
    client = _clients.pop((uri, token or ""), None)
    if client is not None:
        client.close()
        if "://" not in uri and not any(u == uri for u, _ in _clients):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)  # its server holds the file's lock until stopped


def locked(lock: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on its folder."""
    import fcntl

    try:
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def reason(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def clip(text: str, size: int) -> str:
    """text cut to at most size UTF-8 bytes, at a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= size else data[:size].decode("utf-8", "ignore")


ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def quoted(value: str) -> str:
    """A Milvus string literal: backslash, quote, newline, return and tab escaped; the rest as it is."""
    return '"' + value.translate(ESCAPES) + '"'


def among(field: str, values: Iterable) -> str:
    """A Milvus `in` condition."""
    return f"{field} in [{', '.join(quoted(v) if isinstance(v, str) else str(int(v)) for v in values)}]"


def chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


def visible(generation: int) -> str:
    return f"born <= {generation} and died > {generation}"


def filter_expression(filters: Filters) -> str:
    """The filters as a Milvus boolean expression (values of one field are alternatives)."""
    clauses = []
    if filters.doc_ids:
        clauses.append(among("doc_id", filters.doc_ids))
    if filters.sources:
        clauses.append(among("source", filters.sources))
    if filters.dated:
        clauses.append(f"published != {NO_DATE}")
    if filters.published_after is not None:
        clauses.append(f"published >= {int(filters.published_after)}")
    if filters.published_before is not None:
        clauses.append(f"published < {int(filters.published_before)}")
    lowered = lambda values: [v.strip().lower() for v in values]  # noqa: E731
    if filters.outlets:
        clauses.append(among("outlet", lowered(filters.outlets)))
    if filters.languages:
        wanted = lowered(filters.languages)
        clauses.append(f"({among('language', wanted)} or {among('language_base', wanted)})")
    for field, values in (("authors", filters.authors), ("tags", filters.tags)):
        if values:
            clauses.append(f"ARRAY_CONTAINS_ANY({field}, [{', '.join(quoted(v) for v in lowered(values))}])")
    return " and ".join(f"({c})" for c in clauses)


@dataclass(frozen=True)
class Names:
    """The collections of one build."""

    passages: str
    sentences: str
    documents: str
    terms: str

    @classmethod
    def of(cls, collection: str, build: str) -> "Names":
        return cls(*(f"{collection}_{build}_{kind}" for kind in ("passages", "sentences", "documents", "terms")))

    def all(self) -> tuple[str, str, str, str]:
        return self.passages, self.sentences, self.documents, self.terms


class Milvus:
    """The calls this engine makes, with Milvus's failures turned into IndexUnavailable."""

    def __init__(self, uri: str, token: str | None, collection: str) -> None:
        self.uri, self.token, self.collection = uri, token, collection
        self.state_name = f"{collection}_state"
        self.loaded: set[str] = set()

    @property
    def client(self):
        return connect(self.uri, self.token)

    def call(self, method: str, *args, **kwargs):
        try:
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except Exception as exc:
                if "released" not in reason(exc) or method not in ("query", "search"):
                    raise
                self.client.load_collection(args[0])  # another client of this file closed and reopened it
                return getattr(self.client, method)(*args, **kwargs)
        except IndexUnavailable:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("pymilvus", "grpc")):
                raise EngineUnreachable(f"Milvus at {self.uri}: {method} failed: {reason(exc)}", FIX) from exc
            raise

    def load(self, name: str) -> None:
        if name not in self.loaded:
            self.call("load_collection", name)
            self.loaded.add(name)

    def query(self, name: str, expression: str, fields: list[str]) -> list[dict]:
        """Every row matching expression (in pages of QUERY_LIMIT)."""
        self.load(name)
        rows: list[dict] = []
        while True:
            page = self.call("query", name, filter=expression, output_fields=fields, limit=QUERY_LIMIT,
                             offset=len(rows))
            rows += page
            if len(page) < QUERY_LIMIT:
                return rows

    def count(self, name: str, expression: str) -> int:
        self.load(name)
        return int(self.call("query", name, filter=expression, output_fields=["count(*)"])[0]["count(*)"])

    def search(self, name: str, data: list, field: str, metric: str, depth: int, expression: str,
               output_fields: Sequence[str] = ()) -> list[dict]:
        self.load(name)
        return self.call("search", name, data, anns_field=field, limit=max(1, min(depth, QUERY_LIMIT)),
                         filter=expression, output_fields=list(output_fields), search_params={"metric_type": metric})[0]

    def insert(self, name: str, rows: list[dict]) -> None:
        for part in chunks(rows, INSERT_ROWS):
            self.call("insert", name, list(part))

    def mark(self, name: str, ids: Sequence[int], died: int) -> None:
        for part in chunks(list(ids), INSERT_ROWS * 4):
            self.call("upsert", name, [{"id": int(i), "died": int(died)} for i in part], partial_update=True)

    def upsert(self, name: str, rows: list[dict]) -> None:
        for part in chunks(rows, INSERT_ROWS * 4):
            self.call("upsert", name, list(part))

    def delete(self, name: str, expression: str) -> None:
        self.call("delete", name, filter=expression)

    def exists(self, name: str) -> bool:
        return bool(self.call("has_collection", name))

    def state(self) -> dict | None:
        """The committed state (None: no index yet)."""
        if not self.exists(self.state_name):
            return None
        self.load(self.state_name)
        rows = self.call("query", self.state_name, ids=[0], output_fields=["record"])
        return json.loads(rows[0]["record"]) if rows else None

    def commit(self, record: dict) -> None:
        if not self.exists(self.state_name):
            self.create(self.state_name, [("record", "text")], dummy=True)
            self.load(self.state_name)
        self.call("upsert", self.state_name, [{"id": 0, "record": json.dumps(record), "v": [0.0, 0.0]}])
        self.call("flush", self.state_name)

    def create(self, name: str, fields: list[tuple], dimension: int = 0, dummy: bool = False) -> None:
        """A collection with an int64 primary key `id` and the given (name, kind, ...) fields."""
        from pymilvus import DataType, Function, FunctionType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        index = self.client.prepare_index_params()
        lite = "://" not in self.uri
        for name_, kind, *size in fields:
            if kind == "int":
                schema.add_field(name_, DataType.INT64)
            elif kind == "text":
                schema.add_field(name_, DataType.VARCHAR, max_length=size[0] if size else 65_535)
            elif kind == "terms":
                schema.add_field(name_, DataType.VARCHAR, max_length=65_535, enable_analyzer=True,
                                 analyzer_params={"tokenizer": "standard"})
                schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
                schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                             input_field_names=[name_], output_field_names=["sparse"]))
                index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                                params={"bm25_k1": KEYWORD.k1, "bm25_b": KEYWORD.b})
            elif kind == "strings":
                schema.add_field(name_, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=size[0],
                                 max_length=FILTER_BYTES)
            elif kind == "ints":
                schema.add_field(name_, DataType.ARRAY, element_type=DataType.INT64, max_capacity=size[0])
            elif kind == "vector":
                schema.add_field(name_, DataType.FLOAT_VECTOR, dim=dimension)
                index.add_index(name_, index_type="FLAT" if lite else "AUTOINDEX", metric_type="IP")
        if dummy:  # Milvus wants a vector field in every collection
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
            index.add_index("v", index_type="FLAT", metric_type="L2")
        self.call("create_collection", name, schema=schema)
        # Declared apart, without waiting: pymilvus's wait sleeps half a second before its first look
        # (3 s a new generation's collections), and the index of an empty collection is ready at once.
        self.call("create_index", name, index, sync=False)
        self.call("load_collection", name)

    def drop(self, name: str) -> None:
        if self.exists(name):
            self.call("drop_collection", name)
        self.loaded.discard(name)


PASSAGE_FIELDS = [("born", "int"), ("died", "int"), ("doc_number", "int"), ("doc_id", "text", 4096),
                  ("passage_key", "text", 8192), ("title", "text", 8192), ("source", "text", 8192),
                  ("section", "text", 8192), ("paragraph", "int"), ("start", "int"), ("stop", "int"),
                  ("text", "text"), ("terms", "terms"), ("vector", "vector"), ("key", "text", 256),
                  ("published", "int"), ("metadata", "text"), ("outlet", "text", FILTER_BYTES),
                  ("language", "text", FILTER_BYTES), ("language_base", "text", FILTER_BYTES),
                  ("authors", "strings", 256), ("tags", "strings", 256),
                  ("signature", "ints", neardup.PERMUTATIONS), ("spans", "ints", 4096)]
SENTENCE_FIELDS = [("born", "int"), ("vector", "vector")]  # id: passage id * SENTENCES + position
TERM_FIELDS = [("term", "text", 8192), ("df", "int"), ("generation", "int"), ("previous", "int")]
SENTENCES = 4096  # sentence keys per passage (a passage of 256 tokens holds far fewer)
DOCUMENT_FIELDS = [("born", "int"), ("died", "int"), ("doc_number", "int"), ("part", "int"),
                   ("doc_id", "text", 4096), ("title", "text", 8192), ("source", "text", 8192),
                   ("origin", "text", 16), ("content_hash", "text", 128), ("metadata", "text"), ("text", "text")]
PASSAGE_OUT = ["id", "doc_number", "doc_id", "passage_key", "title", "source", "section", "paragraph", "start",
               "stop", "text", "metadata", "spans"]


def passage_of(row: dict) -> Passage:
    return Passage(row["passage_key"], row["doc_id"], row["title"], row["source"], row["section"],
                   int(row["paragraph"]), int(row["start"]), int(row["stop"]), row["text"])


def metadata_of(row: dict) -> Metadata:
    return Metadata.from_json(row["metadata"]) if row.get("metadata") else Metadata()


class MilvusReader:
    """One committed generation of the index, as search sees it (IndexReader)."""

    def __init__(self, milvus: Milvus, state: dict) -> None:
        self.milvus, self.state = milvus, state
        self.names = Names.of(milvus.collection, state["build"])
        self.G = int(state["generation"])
        self.generation = generation_name(state)
        self.manifest = {"model": state["model"], "passages": state["passages"], "documents": state["documents"],
                         "sentences": state["sentences"], "segments": [], "built_at": state["built_at"],
                         "chunker": state.get("chunker"), "engine": "milvus"}
        self.live = visible(self.G)
        self.frequencies: dict[str, int] = {}

    def counts(self) -> dict[str, int]:
        return {"passages": self.state["passages"], "documents": self.state["documents"], "segments": 0}

    def where(self, expression: str = "") -> str:
        return f"{self.live} and ({expression})" if expression else self.live

    def select(self, filters: Filters) -> Selection:
        # size: an upper bound (counting costs Milvus Lite a scan); searches find nothing when none match
        return Selection({"expression": filter_expression(filters)}, self.state["passages"])

    def restricted(self, selection: Selection | None) -> str:
        return self.where(selection.parts["expression"] if selection is not None else "")

    def dense(self, vector: np.ndarray, depth: int, selection: Selection | None = None,
              exact: bool = False) -> list[tuple[int, float]]:
        found = self.milvus.search(self.names.passages, [np.asarray(vector, np.float32).tolist()], "vector", "IP",
                                   depth, self.restricted(selection))
        return [(int(hit["id"]), float(hit["distance"])) for hit in found]

    def keyword(self, terms: list[str], depth: int, selection: Selection | None = None) -> list[tuple[int, float]]:
        """The passages Milvus's BM25 finds, scored again with this generation's statistics.

        Milvus scores with statistics of every row it holds, rows of replaced and deleted documents
        included, and lags behind changes: after a reindex its scores were not a fresh build's. The
        state keeps the live passages' count and total length and the terms collection their
        document frequencies, so the passages Milvus finds are scored here exactly as the FAISS
        engine (and a fresh build) scores them. An index written before the state kept the length
        keeps Milvus's own scores."""
        if not terms:
            return []
        exact = "terms_total" in self.state
        found = self.milvus.search(self.names.passages, [" ".join(terms)], "sparse", "BM25", depth,
                                   self.restricted(selection), ["terms"] if exact else ())
        if not exact:
            # Milvus Lite gives BM25 negated, and with the (k1 + 1) factor Lucene's BM25 (and the FAISS
            # engine's) leaves out
            return [(int(hit["id"]), abs(float(hit["distance"])) / (KEYWORD.k1 + 1)) for hit in found]
        weights = self.term_weights(terms)
        average = self.state["terms_total"] / max(self.state["passages"], 1)
        scored = [(int(hit["id"]), bm25(terms, hit["entity"]["terms"].split(), weights, average, KEYWORD))
                  for hit in found]
        return sorted((hit for hit in scored if hit[1] > 0), key=lambda hit: (-hit[1], hit[0]))

    def term_weights(self, terms: list[str]) -> dict[str, float]:
        """BM25 idf of each query term over the live passages (0 for terms found nowhere), from the
        build's document frequencies as of this generation."""
        wanted = [t for t in dict.fromkeys(terms) if t not in self.frequencies]
        if wanted:
            if len(self.frequencies) > 4096:
                self.frequencies.clear()
            self.frequencies.update(frequencies(self.milvus, self.names, wanted, self.G))
        return {t: idf(self.frequencies[t], self.state["passages"]) for t in dict.fromkeys(terms)}

    def rows(self, ids: Sequence[int], fields: list[str]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        for part in chunks([int(i) for i in dict.fromkeys(ids)], IN_VALUES):
            for row in self.milvus.query(self.names.passages, among("id", part), ["id", *fields]):
                found[int(row["id"])] = row
        return found

    def published(self, ids: Sequence[int]) -> np.ndarray:
        rows = self.rows(ids, ["published"])
        return np.array([rows[int(i)]["published"] if int(i) in rows else NO_DATE for i in ids], dtype=np.int64)

    def signatures(self, ids: Sequence[int]) -> np.ndarray:
        rows = self.rows(ids, ["signature"])
        marks = np.full((len(ids), neardup.PERMUTATIONS), neardup.EMPTY, dtype=np.uint32)
        for n, i in enumerate(ids):
            if int(i) in rows:
                marks[n] = np.asarray(rows[int(i)]["signature"], dtype=np.int64).astype(np.uint32)
        return marks

    def describe(self, ids: Sequence[int]) -> dict[int, tuple[int, Metadata, str]]:
        return {i: (int(row["doc_number"]), metadata_of(row), row["section"])
                for i, row in self.rows(ids, ["doc_number", "metadata", "section"]).items()}

    def documents_of(self, ids: Sequence[int]) -> dict[int, int]:
        return {i: int(row["doc_number"]) for i, row in self.rows(ids, ["doc_number"]).items()}

    def fetch(self, ids: Sequence[int]) -> dict[int, StoredPassage]:
        rows = self.rows(ids, PASSAGE_OUT[1:])
        sentences = sentence_vectors(self.milvus, self.names, rows, self.state["model"]["dimension"])
        return {i: StoredPassage(i, passage_of(row), np.asarray(row["spans"], np.int64).reshape(-1, 2),
                                 sentences.get(i, np.zeros((0, self.state["model"]["dimension"]), np.float32)),
                                 metadata_of(row))
                for i, row in rows.items()}

    def document(self, doc_id: str) -> KeptDocument | None:
        parts = self.milvus.query(self.names.documents, self.where(among("doc_id", [doc_id])),
                                  ["doc_number", "part", "title", "source", "origin", "metadata", "text"])
        if not parts:
            return None
        parts.sort(key=lambda r: r["part"])
        first = parts[0]
        kept = Document(doc_id, first["title"], first["source"], "".join(p["text"] for p in parts), metadata_of(first))
        rows = self.milvus.query(self.names.passages, self.where(f"doc_number == {int(first['doc_number'])}"),
                                 PASSAGE_OUT)
        return KeptDocument(kept, first["origin"], tuple(sorted((passage_of(r) for r in rows), key=lambda p: p.start)))

    def document_ids(self, offset: int, limit: int) -> tuple[int, list[tuple[str, str, str, str]]]:
        rows = self.milvus.query(self.names.documents, self.where("part == 0"), ["doc_id", "title", "source", "origin"])
        live = sorted((r["doc_id"], r["title"], r["source"], r["origin"]) for r in rows)
        return len(live), live[offset:offset + limit]


def sentence_keys(rows: dict[int, dict]) -> list[int]:
    """The sentence rows' keys of passages (rows with their spans)."""
    return [i * SENTENCES + n for i, row in rows.items() for n in range(len(row["spans"]) // 2)]


def sentence_vectors(milvus: Milvus, names: Names, rows: dict[int, dict], dimension: int) -> dict[int, np.ndarray]:
    """The sentence vectors of each passage (rows by id, with their spans), in order."""
    found: dict[int, list] = {}
    for part in chunks(sentence_keys(rows), IN_VALUES):
        for row in milvus.query(names.sentences, among("id", part), ["vector"]):
            found.setdefault(int(row["id"]) // SENTENCES, []).append((int(row["id"]), row["vector"]))
    return {i: np.array([v for _, v in sorted(found[i])], dtype=np.float32).reshape(-1, dimension)
            for i in rows if i in found}


def term_key(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def frequencies(milvus: Milvus, names: Names, terms: Sequence[str], generation: int) -> dict[str, int]:
    """Each term's document frequency at generation: a term's row keeps its value as of the write
    that last changed it (`generation`) and the value before (`previous`), so a search reads the
    value of its own generation, and a write that never committed leaves the previous in force."""
    found = dict.fromkeys(terms, 0)
    for part in chunks(list(terms), IN_VALUES):
        for row in milvus.query(names.terms, among("id", [term_key(t) for t in part]),
                                ["term", "df", "generation", "previous"]):
            if row["term"] in found:
                found[row["term"]] = int(row["df"] if row["generation"] <= generation else row["previous"])
    return found


def generation_name(state: dict) -> str:
    return f"milvus-{state['build']}-g{state['generation']}"


class MilvusWriter:
    """The writing side (IndexWriter); callers hold the index folder's build lock while applying."""

    def __init__(self, milvus: Milvus, model: str, dimension: int, rebuild: bool = False) -> None:
        self.milvus, self.model, self.dimension = milvus, model, dimension
        self.rebuild = rebuild  # a repair: the next apply writes a whole new build

    def state(self) -> dict | None:
        """The committed state when it is for this model (None: a build starts from nothing)."""
        state = self.milvus.state()
        if state is None or state["model"] != {"name": self.model, "dimension": self.dimension}:
            return None
        return state

    def reader(self, state: dict) -> MilvusReader:
        return MilvusReader(self.milvus, state)

    def live_documents(self, doc_ids: Sequence[str] | None = None) -> dict[str, LiveDocument]:
        state = self.state()
        if state is None:
            return {}
        reader = self.reader(state)
        found: dict[str, LiveDocument] = {}
        groups = [None] if doc_ids is None else list(chunks(list(doc_ids), IN_VALUES))
        for group in groups:
            expression = "part == 0" + (f" and {among('doc_id', group)}" if group is not None else "")
            for row in self.milvus.query(reader.names.documents, reader.where(expression),
                                         ["doc_id", "doc_number", "origin", "content_hash"]):
                found[row["doc_id"]] = LiveDocument(row["doc_id"], int(row["doc_number"]), row["origin"],
                                                    row["content_hash"])
        return found

    def ingested_documents(self) -> list[Document]:
        """Documents added over the API that the index serves, whatever model built it."""
        state = self.milvus.state()
        if state is None:
            return []
        return [d.document for d in read_documents(self.milvus, state, "origin == 'api'")]

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        state = self.state()
        if state is None or not keys:
            return {}
        names, rows = Names.of(self.milvus.collection, state["build"]), {}
        for part in chunks(list(dict.fromkeys(keys)), IN_VALUES):
            for row in self.milvus.query(names.passages, among("key", part), ["key", "vector", "spans"]):
                rows.setdefault(row["key"], row)
        sentences = sentence_vectors(self.milvus, names, {int(r["id"]): r for r in rows.values()}, self.dimension)
        return {key: (np.asarray(row["vector"], np.float32),
                      sentences.get(int(row["id"]), np.zeros((0, self.dimension), np.float32)))
                for key, row in rows.items()}

    def health(self) -> dict:
        state = self.state()
        if state is None:
            return {"generation": None, "segments": 0, "chunker": None, "documents": 0, "passages": 0, "sentences": 0}
        return {"generation": generation_name(state), "segments": 0, "chunker": state.get("chunker"),
                **{key: state[key] for key in ("documents", "passages", "sentences")}}

    def apply(self, changes: ChangeSet) -> str:
        """Write the change invisibly, flush, then commit the state: one generation more. A write
        Milvus refuses (a full disk, an outage) raises OSError: the committed state is untouched."""
        try:
            return self.write(changes)
        except IndexUnavailable as exc:
            raise OSError(f"{exc.message} (nothing was published)") from exc

    def write(self, changes: ChangeSet) -> str:
        milvus, committed = self.milvus, self.milvus.state()
        if committed is not None:
            tidy(milvus, committed)
        state = self.state()
        generation = int((committed or {}).get("next_generation", 1))
        fresh = state is None or changes.replace_all or self.rebuild
        build = f"b{generation}" if fresh else state["build"]
        names = Names.of(milvus.collection, build)
        base = {"next_id": 0, "documents": 0, "passages": 0, "sentences": 0, "terms_total": 0} if fresh else state
        record = {**(committed or {}), "pending": build if fresh else None, "next_generation": generation + 1}
        if committed is not None:
            milvus.commit(record)  # a crash from here on leaves rows the next writer removes
        if fresh:
            for name, fields in zip(names.all(), (PASSAGE_FIELDS, SENTENCE_FIELDS, DOCUMENT_FIELDS, TERM_FIELDS)):
                milvus.drop(name)
                milvus.create(name, fields, self.dimension, dummy=name in (names.documents, names.terms))
        counts = {key: int(base[key]) for key in ("next_id", "documents", "passages", "sentences")}
        if "terms_total" in base:  # the live passages' total length (an index written before lacks it)
            counts["terms_total"] = int(base["terms_total"])
        counted: Counter = Counter()  # document frequency changes
        reader = None if fresh else self.reader(state)
        retired: set[str] = set()  # a changed document is both deleted and upserted: retired once
        if reader is not None:
            self.retire(reader, list(changes.deletes), generation, counts, counted, retired)
        for batch in changes.upserts:
            if reader is not None:
                self.retire(reader, [d.stored.document.doc_id for d in batch], generation, counts, counted, retired)
            if batch:
                self.insert(names, batch, generation, counts, counted)
        self.count_terms(names, counted, generation, int((committed or {}).get("generation", 0)) if not fresh else 0)
        for name in names.all():
            milvus.call("flush", name)
        new = {**(committed or {}), "generation": generation, "next_generation": generation + 1, "build": build,
               "pending": None, "previous_build": (committed or {}).get("build") if fresh else
               (committed or {}).get("previous_build"),
               "model": {"name": self.model, "dimension": self.dimension},
               "chunker": changes.chunker if changes.chunker is not None or fresh else state.get("chunker"),
               "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **counts, **changes.meta}
        milvus.commit(new)
        return generation_name(new)

    def count_terms(self, names: Names, counted: Counter, generation: int, committed: int) -> None:
        """Write the changed document frequencies as of generation (the committed ones stay readable)."""
        changed = [t for t, n in counted.items() if n]
        before = frequencies(self.milvus, names, changed, committed) if committed else dict.fromkeys(changed, 0)
        self.milvus.upsert(names.terms, [{"id": term_key(t), "term": t, "df": max(before[t] + counted[t], 0),
                                          "generation": generation, "previous": before[t], "v": [0.0, 0.0]}
                                         for t in changed])

    def retire(self, reader: MilvusReader, doc_ids: list[str], generation: int, counts: dict,
               counted: Counter, retired: set[str]) -> None:
        """Mark the live rows of these documents as dying at generation (each document once: the
        reader still sees rows marked in this write as live, and would count them off again)."""
        doc_ids = [d for d in dict.fromkeys(doc_ids) if d not in retired]
        retired.update(doc_ids)
        for part in chunks(doc_ids, IN_VALUES):
            if not part:
                continue
            documents = self.milvus.query(reader.names.documents, reader.where(among("doc_id", list(part))),
                                          ["doc_number", "part"])
            numbers = sorted({int(r["doc_number"]) for r in documents})
            if not numbers:
                continue
            passages = self.milvus.query(reader.names.passages, reader.where(among("doc_number", numbers)),
                                         ["spans", "terms"])
            counted.subtract(t for r in passages for t in set(r["terms"].split()))
            self.milvus.mark(reader.names.documents, [int(r["id"]) for r in documents], generation)
            self.milvus.mark(reader.names.passages, [int(r["id"]) for r in passages], generation)
            counts["documents"] -= len(numbers)
            counts["passages"] -= len(passages)
            counts["sentences"] -= sum(len(r["spans"]) // 2 for r in passages)
            if "terms_total" in counts:
                counts["terms_total"] -= sum(len(r["terms"].split()) for r in passages)

    def insert(self, names: Names, batch: Sequence[PreparedDocument], generation: int, counts: dict,
               counted: Counter) -> None:
        passages, sentences, documents = [], [], []
        for prepared in batch:
            number = counts["next_id"]
            counts["next_id"] += 1 + len(prepared.passages)
            documents += document_rows(prepared.stored, number, generation)
            terms = passage_terms(list(prepared.passages))
            signatures = neardup.signatures([p.text for p in prepared.passages])
            meta = prepared.stored.document.metadata
            published = epoch(meta.published_at) if meta.published_at else NO_DATE
            filters = metadata_fields(meta)
            first = 0
            for n, (passage, key, count) in enumerate(zip(prepared.passages, prepared.keys, prepared.sentence_counts)):
                passage_id = number + 1 + n
                spans = prepared.sentence_spans[first:first + count]
                for position, vector in enumerate(prepared.sentence_vectors[first:first + count]):
                    sentences.append({"id": passage_id * SENTENCES + position, "born": generation,
                                      "vector": np.asarray(vector, np.float32).tolist()})
                first += count
                counted.update(set(terms[n]))
                passages.append({
                    "id": passage_id, "born": generation, "died": ALIVE, "doc_number": number,
                    "doc_id": passage.doc_id, "passage_key": clip(passage.passage_id, 8192),
                    "title": clip(passage.title, 8192), "source": clip(passage.source, 8192),
                    "section": clip(passage.section, 8192), "paragraph": passage.paragraph, "start": passage.start,
                    "stop": passage.end, "text": clip(passage.text, 65_535), "terms": clip(" ".join(terms[n]), 65_535),
                    "vector": np.asarray(prepared.vectors[n], np.float32).tolist(), "key": key,
                    "published": published, "metadata": meta.to_json() or "", **filters,
                    "signature": signatures[n].astype(np.int64).tolist(),
                    "spans": np.asarray(spans, np.int64).reshape(-1).tolist()})
            counts["documents"] += 1
            counts["passages"] += len(prepared.passages)
            counts["sentences"] += int(sum(prepared.sentence_counts))
            if "terms_total" in counts:
                counts["terms_total"] += sum(len(clip(" ".join(t), 65_535).split()) for t in terms)
        self.milvus.insert(names.documents, documents)
        self.milvus.insert(names.sentences, sentences)
        self.milvus.insert(names.passages, passages)


def metadata_fields(meta: Metadata) -> dict:
    """The metadata as the filters read it: lower case; a language also by its base (en-GB: en)."""
    language = (meta.language or "").strip().lower()
    return {"outlet": clip((meta.outlet or "").strip().lower(), FILTER_BYTES), "language": clip(language, FILTER_BYTES),
            "language_base": clip(language.split("-")[0], FILTER_BYTES),
            "authors": [clip(a.strip().lower(), FILTER_BYTES) for a in meta.authors][:256],
            "tags": [clip(t.strip().lower(), FILTER_BYTES) for t in meta.tags][:256]}


def document_rows(stored: StoredDocument, number: int, generation: int) -> list[dict]:
    document = stored.document
    if len(document.doc_id.encode("utf-8")) > 4096:
        raise ValueError(f"document id longer than 4096 bytes: {document.doc_id[:80]}…")
    text = document.text
    pieces = [text[i:i + TEXT_PART] for i in range(0, len(text), TEXT_PART)] or [""]
    if len(pieces) > PARTS:
        raise ValueError(f"document {document.doc_id} is longer than {TEXT_PART * PARTS} characters")
    return [{"id": number * PARTS + part, "born": generation, "died": ALIVE, "doc_number": number, "part": part,
             "doc_id": document.doc_id, "title": clip(document.title, 8192), "source": clip(document.source, 8192),
             "origin": stored.origin, "content_hash": stored.content_hash,
             "metadata": (document.metadata.to_json() or "") if part == 0 else "", "text": piece, "v": [0.0, 0.0]}
            for part, piece in enumerate(pieces)]


def read_documents(milvus: Milvus, state: dict, expression: str) -> list[StoredDocument]:
    """The live documents matching expression, their text put together from its parts."""
    names = Names.of(milvus.collection, state["build"])
    rows = milvus.query(names.documents, f"{visible(int(state['generation']))} and ({expression})",
                        ["doc_number", "part", "doc_id", "title", "source", "origin", "content_hash", "metadata", "text"])
    by_number: dict[int, list[dict]] = {}
    for row in rows:
        by_number.setdefault(int(row["doc_number"]), []).append(row)
    found = []
    for number in sorted(by_number):
        parts = sorted(by_number[number], key=lambda r: r["part"])
        first = parts[0]
        document = Document(first["doc_id"], first["title"], first["source"], "".join(p["text"] for p in parts),
                            metadata_of(first))
        found.append(StoredDocument(document, first["origin"], first["content_hash"]))
    return found


def tidy(milvus: Milvus, state: dict) -> None:
    """Remove what writes that never committed left behind (rows born after the committed
    generation, a half-written build), and bring back rows they marked as dying."""
    generation, build = int(state["generation"]), state["build"]
    if state.get("pending") and state["pending"] != build:
        for name in Names.of(milvus.collection, state["pending"]).all():
            milvus.drop(name)
    names = Names.of(milvus.collection, build)
    for name in (names.passages, names.sentences, names.documents):
        milvus.load(name)
        milvus.delete(name, f"born > {generation}")  # term rows of that write still read their previous value
    for name in (names.passages, names.documents):
        dying = milvus.query(name, f"died > {generation} and died < {ALIVE}", ["id"])
        milvus.mark(name, [int(r["id"]) for r in dying], ALIVE)


class MilvusEngine:
    """An index in Milvus (Engine): the folder keeps the build lock, the embedding cache and
    engine.json (this engine, its URI and collection)."""

    def __init__(self, root: Path, model: str, dimension: int, uri: str | None = None, token: str | None = None,
                 collection: str | None = None, **_ignored) -> None:
        record = read_record(root) or {}
        self.root, self.model, self.dimension = Path(root), model, dimension
        self.uri = uri or record.get("uri") or default_uri(root)
        self.collection = collection or record.get("collection") or collection_name(root)
        self.milvus = Milvus(self.uri, token, self.collection)

    def describe(self) -> dict:
        """What the folder's engine.json records: the URI unless it is the folder's own Milvus Lite
        file (so a copy of the folder is a copy of the index), and the collection."""
        located = {} if self.uri == default_uri(self.root) else {"uri": self.uri}
        return {"engine": "milvus", **located, "collection": self.collection}

    def current(self) -> str | None:
        state = self.milvus.state()
        return generation_name(state) if state else None

    @staticmethod
    def recorded_model(root: Path, uri: str | None = None, token: str | None = None, **_options) -> dict | None:
        record = read_record(root) or {}
        uri = uri or record.get("uri") or default_uri(root)
        if "://" not in uri and not Path(uri).exists():
            return None  # Milvus Lite makes its file on first use: no file, no index
        state = Milvus(uri, token, record.get("collection") or collection_name(root)).state()
        return state["model"] if state else None

    def reader(self) -> IndexReader:
        state = self.milvus.state()
        if state is None:
            raise IndexUnavailable(f"no index in Milvus at {self.uri} (collection {self.collection})",
                                   fix_command("index", "FOLDER", "--out", self.root, "--engine", "milvus",
                                               note="FOLDER: the folder of your articles"))
        if state["model"]["name"] != self.model or state["model"]["dimension"] != self.dimension:
            raise IndexUnavailable(f"the index in Milvus at {self.uri} was built with {state['model']['name']}, "
                                   f"not {self.model}", fix_command("index", "FOLDER", "--out", self.root, "--force",
                                                                   note="FOLDER: the folder of your articles"))
        reader = MilvusReader(self.milvus, state)
        for name in reader.names.all():
            if not self.milvus.exists(name):
                raise IndexDamaged(f"Milvus collection {name} is missing", fix_command("repair", self.root))
        return reader

    def writer(self) -> MilvusWriter:
        return MilvusWriter(self.milvus, self.model, self.dimension)

    def prepare(self) -> None:
        return None

    def maintain(self) -> list[str]:
        """Remove rows no search reads any more (replaced or deleted two generations ago or more)
        and a build that was replaced."""
        state, done = self.milvus.state(), []
        if state is None:
            return done
        old = state.get("previous_build")
        if old and old != state["build"]:
            for name in Names.of(self.collection, old).all():
                self.milvus.drop(name)
            self.milvus.commit({**state, "previous_build": None})
            done.append(f"dropped the collections of build {old}")
        names, before = Names.of(self.collection, state["build"]), int(state["generation"])
        dead = self.milvus.query(names.passages, f"died < {before}", ["id", "spans"])
        if dead:
            ids = [int(r["id"]) for r in dead]
            for part in chunks(sentence_keys({int(r["id"]): r for r in dead}), IN_VALUES):
                self.milvus.delete(names.sentences, among("id", part))
            for part in chunks(ids, IN_VALUES):
                self.milvus.delete(names.passages, among("id", part))
            self.milvus.delete(names.documents, f"died < {before}")
            done.append(f"removed {len(ids)} replaced passages")
        return done

    def release(self, serving: IndexReader) -> None:
        return None

    def close(self) -> None:
        disconnect(self.uri, self.milvus.token)
        self.milvus.loaded.clear()

    def inspect(self) -> Damage:
        """The state readable, the build's collections present, and their live rows as counted."""
        state = self.milvus.state()
        if state is None:
            return Damage()
        names, problems = Names.of(self.collection, state["build"]), []
        missing = [n for n in names.all() if not self.milvus.exists(n)]
        if missing:
            problems.append(f"Milvus collections missing: {', '.join(missing)}")
        else:
            live = visible(int(state["generation"]))
            for name, key in ((names.passages, "passages"), (names.documents, "documents")):
                found = self.milvus.count(name, live + (" and part == 0" if key == "documents" else ""))
                if found != state[key]:
                    problems.append(f"{name} holds {found} live {key}, the state says {state[key]}")
        if not problems:
            return Damage(model=state["model"]["name"])
        kept = [] if names.documents in missing else read_documents(self.milvus, state, "doc_number >= 0")
        whole = tuple(d for d in kept if content_hash(d.document) == d.content_hash)
        return Damage(problems=tuple(problems), recoverable=whole, model=state["model"]["name"])

    def repairer(self, damage: Damage) -> MilvusWriter:
        return MilvusWriter(self.milvus, self.model, self.dimension, rebuild=True)
