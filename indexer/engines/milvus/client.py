"""The Milvus engine's connection: the client, its calls with their deadlines and errors, the
names of an index's collections, and filter expressions."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from indexer.errors import EngineUnreachable, WriteBusy, WriteFailed
from indexer.index.engine import ENGINE_CALLS, IndexUnavailable
from indexer.index.folder import read_record
from indexer.settings import current
from indexer.text.keyword import KeywordParams
from indexer.text.metadata import NO_DATE, Filters

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
CALL_TIMEOUT = 10.0  # seconds (SEMSEARCH_MILVUS_TIMEOUT)
LEASE_ROW = 1             # the write lease's row in the state collection (the state is row 0)
LEASE_SECONDS = 15.0      # a lease not renewed for this long is free (its holder died); renewed every quarter
SETTLE_SECONDS = 0.5      # longer than any writer takes between reading a free lease and writing it
LEASE_WAIT = 60.0         # how long a write waits for another's before it gives up (WriteBusy)
LITE_ATTEMPTS = 6  # tries to open a Milvus Lite file, half a second apart
FIX = "check that Milvus is running and SEMSEARCH_MILVUS_URI / --milvus-uri names it"


def default_uri(root: Path) -> str:
    """Milvus Lite in the index folder."""
    return str(Path(root).resolve() / "milvus.db")


def collection_name(root: Path, uri: str) -> str:
    """A collection name for a new index in the folder root: letters, digits and underscores. In a
    server, which many folders on many machines share, it is made unique by the machine and the
    folder's path (two folders named index/ are two indexes); replicas take it from engine.json."""
    name = re.sub(r"\W", "_", Path(root).resolve().name or "index")[:160]
    if "://" not in uri:  # Milvus Lite: a file of the folder's own
        return "semsearch_" + name
    where = hashlib.sha256(f"{socket.gethostname()}:{Path(root).resolve()}".encode()).hexdigest()[:10]
    return f"semsearch_{name}_{where}"


def located(root: Path, uri: str | None) -> str:
    """Where the index in root lives: the URI given; else the one its engine.json records (none
    recorded: the folder's own Milvus Lite file); else, for a new index, SEMSEARCH_MILVUS_URI or
    that file."""
    record = read_record(root) or {}
    if uri:
        return uri
    if record.get("engine") == "milvus":
        return record.get("uri") or default_uri(root)
    return current().milvus_uri or default_uri(root)


_clients: dict[tuple[str, str], object] = {}


def connect(uri: str, token: str | None):
    """One client per URI in a process (Milvus Lite lets one process open its file)."""
    key = (uri, token or "")
    if key not in _clients:
        from pymilvus import MilvusClient

        # Milvus Lite lacks AllocTimestamp, and a query iterator says so each time (set here: importing
        # pymilvus resets the levels of its loggers)
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
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


def drop_client(uri: str, token: str | None) -> None:
    """Forget the process's client for a server's uri (its connection is gone); the next call connects again."""
    client = _clients.pop((uri, token or ""), None)
    if client is not None:
        try:
            client.close()
        except Exception:  # already closed by the server
            pass


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

    def __init__(self, uri: str, token: str | None, collection: str, timeout: float | None = None) -> None:
        self.uri, self.token, self.collection = uri, token, collection
        self.timeout = timeout or CALL_TIMEOUT  # every call's deadline: a stalled server costs a request, not a replica
        self.holder: str | None = None  # this process's name on the write lease while it holds it
        self.holding = threading.RLock()  # and one thread of it at a time (a write, a merge, a feed's change)
        self.state_name = f"{collection}_state"
        self.loaded: set[str] = set()

    @property
    def client(self):
        return connect(self.uri, self.token)

    def call(self, method: str, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        with ENGINE_CALLS.timing("milvus", method):
            return self.calling(method, *args, **kwargs)

    @contextmanager
    def failures(self, method: str):
        """pymilvus's and gRPC's errors as EngineUnreachable, naming the call."""
        try:
            yield
        except IndexUnavailable:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("pymilvus", "grpc")):
                raise EngineUnreachable(f"Milvus at {self.uri}: {method} failed: {reason(exc)}", FIX) from exc
            raise

    def calling(self, method: str, *args, **kwargs):
        with self.failures(method):
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except Exception as exc:
                if "://" in self.uri and "too many pings" in reason(exc).lower():
                    # The server closed this connection for its keep-alive pings (a milvus-lite server
                    # allows one each 5 minutes, pymilvus sends one each 10 s): a new connection, once.
                    drop_client(self.uri, self.token)
                    return getattr(self.client, method)(*args, **kwargs)
                if "released" not in reason(exc) or method not in ("query", "search"):
                    raise
                self.client.load_collection(args[0])  # another client of this file closed and reopened it
                return getattr(self.client, method)(*args, **kwargs)

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

    def scan(self, name: str, expression: str, fields: list[str]) -> Iterable[dict]:
        """Every row matching expression, however many (an iterator over pages of QUERY_LIMIT)."""
        self.load(name)
        pages = self.call("query_iterator", name, batch_size=QUERY_LIMIT, filter=expression, output_fields=fields)
        try:
            while True:
                with ENGINE_CALLS.timing("milvus", "query_iterator"), self.failures("query_iterator"):
                    page = pages.next()
                if not page:
                    return
                yield from page
        finally:
            pages.close()

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
        """The committed state (None: no index yet), as of the last commit anywhere."""
        if not self.exists(self.state_name):
            return None
        self.load(self.state_name)
        rows = self.call("query", self.state_name, ids=[0], output_fields=["record"], consistency_level="Strong")
        return json.loads(rows[0]["record"]) if rows else None

    def commit(self, record: dict) -> None:
        self.state_collection()
        if self.holder is not None and self.lease_holder() != self.holder:  # fencing: a lease lost is no commit
            raise WriteFailed(f"Milvus at {self.uri}: this write's lease on {self.collection} expired and another "
                              "writer took it; nothing more of it is committed")
        self.call("upsert", self.state_name, [{"id": 0, "record": json.dumps(record), "v": [0.0, 0.0]}])
        self.call("flush", self.state_name)

    def state_collection(self) -> None:
        if not self.exists(self.state_name):
            self.create(self.state_name, [("record", "text")], dummy=True)
            self.load(self.state_name)

    def lease_holder(self) -> str | None:
        """Who holds the write lease now (None: nobody, or a holder that stopped renewing it)."""
        self.load(self.state_name)
        rows = self.call("query", self.state_name, ids=[LEASE_ROW], output_fields=["record"], consistency_level="Strong")
        lease = json.loads(rows[0]["record"]) if rows else {}
        return lease.get("holder") if lease.get("expires", 0) > time.time() else None

    def write_lease(self, holder: str | None) -> None:
        record = {"holder": holder, "expires": time.time() + LEASE_SECONDS if holder else 0}
        self.call("upsert", self.state_name, [{"id": LEASE_ROW, "record": json.dumps(record), "v": [0.0, 0.0]}])

    @contextmanager
    def lease(self, wait: float = LEASE_WAIT):
        """One writer at a time on this index, across processes and machines (replicas share no
        folder, so the folder's build lock cannot do it). Milvus has no compare-and-set, so this is
        Fischer's timed mutual exclusion on one row: a writer that finds the lease free writes its
        name, waits longer than any writer takes between looking and writing (SETTLE_SECONDS), and
        holds the lease only if the row still names it. Held, a thread renews it as the write goes on
        (keep) and checked again at the commit; a holder killed mid-write frees it by expiry.
        Raises WriteBusy when another writer keeps it past `wait` seconds."""
        deadline = time.monotonic() + wait
        acquired = self.holding.acquire(timeout=wait) if wait > 0 else self.holding.acquire(blocking=False)
        if not acquired:
            raise WriteBusy(f"another write of this process to the index in Milvus at {self.uri} did not finish "
                            f"within {wait:.0f} s; nothing was written")
        try:
            if self.holder is not None or "://" not in self.uri:  # held by this thread already, or Milvus
                yield  # Lite, whose file one process opens at a time: the lock above is all it needs
                return
            with self.held(deadline, wait):
                yield
        finally:
            self.holding.release()

    @contextmanager
    def held(self, deadline: float, wait: float):
        """The lease row taken for this process (see lease), and freed after."""
        me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state_collection()
        while True:
            if self.lease_holder() is None:
                self.write_lease(me)
                time.sleep(SETTLE_SECONDS)
                if self.lease_holder() == me:
                    break
            if time.monotonic() >= deadline:
                raise WriteBusy(f"another writer (a replica, or a build elsewhere) is writing the index in Milvus at "
                                f"{self.uri} and did not finish within {wait:.0f} s; nothing was written")
            time.sleep(random.uniform(0.05, 0.3))
        self.holder, released = me, threading.Event()
        renewing = threading.Thread(target=self.keep, args=(me, released), name="milvus-lease", daemon=True)
        renewing.start()
        try:
            yield
        finally:
            released.set()
            renewing.join()
            self.holder = None
            try:
                if self.lease_holder() == me:
                    self.write_lease(None)
            except Exception:  # Milvus gone: the lease expires by itself
                log.warning("could not free the write lease on %s; it expires in %.0f s", self.collection,
                            LEASE_SECONDS)

    def keep(self, me: str, released: threading.Event) -> None:
        """Renew the lease every quarter of its life while the write holds it (embedding a large
        batch between two inserts can take minutes); a killed process stops renewing it."""
        while not released.wait(LEASE_SECONDS / 4):
            try:
                self.write_lease(me)
            except Exception as exc:  # Milvus away: the write fails on its own; the commit's check decides
                log.warning("could not renew the write lease on %s: %s", self.collection, exc)

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
            elif kind == "blobs":  # (capacity, length of each)
                schema.add_field(name_, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=size[0],
                                 max_length=size[1])
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
