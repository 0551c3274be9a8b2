"""Compose read -> chunk -> embed -> store: a folder reindex, or a change to a few documents.

Only documents that are new or changed are chunked and embedded; they go into a new segment and
the engine replaces the versions they change (indexer/index/engine.py: ChangeSet). A full rebuild happens
only when forced or when the chunking code, model or window changed.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from indexer.text import chunking, keyword
from indexer.model import pieces, pooling
from indexer.model.pieces import PIECE_DIMENSION
from indexer.index.cache import EmbeddingCache, cache_key
from indexer.text.chunking import chunk_document, embedding_input, sentence_spans
from indexer.text.documents import Document, DocumentError, StoredDocument, content_hash, read_folder
from indexer.model.embedding import TextModel
from indexer.index.engine import ChangeSet, Engine, IndexWriter, LiveDocument, PreparedDocument, open_engine, remember
from indexer.index.folder import build_lock
from indexer.index.progress import BuildProgress

log = logging.getLogger(__name__)
CACHE_FLUSH = 1024  # passages embedded between cache writes: a killed build keeps its progress
BATCH_PASSAGES = 100_000  # passages per new segment in a large build: bounds a build's memory


@dataclass(frozen=True)
class Changes:
    """How the wanted documents differ from the ones the current generation holds."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int

    @property
    def stale(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(frozen=True)
class BuildSummary:
    """What one build did, for the CLI to print; generation is None when nothing had to change."""

    generation: Path | None
    changes: Changes
    documents: int
    passages: int
    sentences: int
    passages_embedded: int
    seconds: float


def build_from_folder(seeds: Path, out: Path, embedder: TextModel, progress: bool | None = None,
                      force: bool = False, engine: Engine | None = None) -> BuildSummary:
    """Index the documents under seeds (plus those ingested over HTTP) into out."""
    return build_index(out, embedder, list(read_folder(seeds)), progress, force, str(seeds), engine=engine)


def build_from_documents(documents: Iterable[Document], out: Path, embedder: TextModel,
                         progress: bool | None = None, origin: str = "input",
                         engine: Engine | None = None, remote: Embedding | None = None) -> BuildSummary:
    """Index the given documents, as a folder reindex would."""
    return build_index(out, embedder, list(documents), progress, origin=origin, engine=engine, remote=remote)


class PruneRefused(DocumentError):
    """A folder reindex would remove more than half of the index's folder documents."""

    def __init__(self, removed: Sequence[str], total: int, origin: str) -> None:
        shown = ", ".join(removed[:20]) + (" …" if len(removed) > 20 else "")
        super().__init__(f"refusing to remove {len(removed)} of the index's {total} folder documents, "
                         f"which are not in {origin}: {shown}; nothing was changed. Check the folder, "
                         "or pass --prune to remove them")
        self.removed = list(removed)


class UnknownDocument(LookupError):
    """A delete named documents that were not ingested over the API (or no longer exist)."""

    def __init__(self, doc_ids: Sequence[str]) -> None:
        super().__init__(", ".join(doc_ids))
        self.doc_ids = list(doc_ids)


def wanted_documents(folder: list[Document], writer: IndexWriter) -> dict[str, StoredDocument]:
    """Folder documents plus the ingested ones the index serves (an ingested document replaces a
    folder one with its id)."""
    stored = [StoredDocument(d, "folder", content_hash(d)) for d in folder]
    stored += [StoredDocument(d, "api", content_hash(d)) for d in writer.ingested_documents()]
    wanted: dict[str, StoredDocument] = {}
    for item in stored:
        doc_id = item.document.doc_id
        if doc_id in wanted and item.origin == wanted[doc_id].origin:
            log.warning("duplicate document id %r: keeping %s, skipping %s", doc_id,
                        wanted[doc_id].document.source, item.document.source)
            continue
        wanted[doc_id] = item
    return wanted


def compare(previous: dict[str, LiveDocument], wanted: dict[str, StoredDocument]) -> Changes:
    changed = tuple(sorted(i for i in wanted if i in previous and previous[i].content_hash != wanted[i].content_hash))
    return Changes(added=tuple(sorted(set(wanted) - set(previous))), changed=changed,
                   removed=tuple(sorted(set(previous) - set(wanted))),
                   unchanged=sum(1 for i in wanted if i in previous and i not in changed))


def check(root: Path, model: str, dimension: int, folder: list[Document], engine: Engine | None = None) -> Changes:
    """How index/ differs from folder plus the ingested documents."""
    writer = (engine or open_engine(root, model, dimension)).writer()
    return compare(writer.live_documents(), wanted_documents(folder, writer))


def engine_of(root: Path, embedder: TextModel, engine: Engine | None) -> Engine:
    """The given engine, or the default one for root."""
    return engine or open_engine(root, embedder.name, embedder.dimension)


def build_index(root: Path, embedder: TextModel, folder: list[Document], progress: bool | None = None,
                force: bool = False, origin: str = "input", engine: Engine | None = None, prune: bool = True,
                remote: Embedding | None = None) -> BuildSummary:
    """Bring index/ up to date with folder (plus ingested documents), touching only what changed.
    remote: where passages are embedded (default: here; indexer/model/ray_embed.py: a Ray cluster).
    prune=False refuses (PruneRefused, before writing) to remove more than half of the index's
    folder documents: pointing a reindex at the wrong folder must not empty a live index."""
    with build_lock(root):
        started = time.perf_counter()  # the build's own time, not a wait for another one
        engine = engine_of(root, embedder, engine)
        writer = engine.writer()
        wanted = wanted_documents(folder, writer)
        if not wanted:
            raise DocumentError(f"no documents to index: {origin} holds no readable article")
        health = writer.health()
        previous = writer.live_documents()
        changes = compare(previous, wanted)
        from_folders = sum(1 for d in previous.values() if d.origin == "folder")
        if not prune and changes.removed and len(changes.removed) * 2 > from_folders:
            raise PruneRefused(changes.removed, from_folders, origin)
        fingerprint = chunker_fingerprint(embedder)
        rebuild = force or health.generation is None or health.chunker != fingerprint
        if not changes.stale and not rebuild:
            return BuildSummary(None, changes, len(wanted), health.passages, health.sentences,
                                0, time.perf_counter() - started)
        fresh = [wanted[i] for i in wanted] if rebuild else [wanted[i] for i in changes.added + changes.changed]
        embedded = [0]
        batches = prepare(fresh, embedder, writer, root, progress, embedded, remote)
        if rebuild:
            batches = require_passages(batches, origin)
        name = writer.apply(ChangeSet(upserts=batches, deletes=changes.removed + changes.changed,
                                      replace_all=rebuild, chunker=fingerprint))
        remember(root, engine)
        after_publish(root, embedder)
        health = writer.health()
    return BuildSummary(Path(root) / name, changes, health.documents, health.passages,
                        health.sentences, embedded[0], time.perf_counter() - started)


def require_passages(batches: Iterator[list[PreparedDocument]], origin: str) -> Iterator[list[PreparedDocument]]:
    """The batches, failing before anything is published when none of them holds a passage."""
    found = False
    for batch in batches:
        found = found or any(p.passages for p in batch)
        yield batch
    if not found:
        raise DocumentError(f"no passages to index: {origin} holds no readable article text")


def update_documents(root: Path, embedder: TextModel, upserts: Sequence[Document], deletes: Sequence[str],
                     engine: Engine | None = None, deletable: str | None = None) -> tuple[str, int]:
    """Add or replace ingested documents and delete others: one new small segment, nothing rebuilt.
    engine: the caller's (a server's, with its segments open), else the default one for root.
    All or nothing: the published generation is the only place the change is stored, so a call
    that raises (a full disk, a kill) has changed nothing. Raises UnknownDocument, before
    writing anything, when a delete names a document the index does not serve (or, with
    deletable, one of another origin: the API deletes only what it ingested).
    Returns the generation and the number of passages embedded."""
    repeated = sorted(doc_id for doc_id, n in Counter(d.doc_id for d in upserts).items() if n > 1)
    if repeated:
        raise DocumentError(f"one document per id: {', '.join(repeated)} given more than once")
    with build_lock(root):
        engine = engine_of(root, embedder, engine)
        writer = engine.writer()
        live = writer.live_documents(list(deletes)) if deletes else {}
        unknown = [i for i in deletes if i not in live or deletable not in (None, live[i].origin)]
        if unknown:
            raise UnknownDocument(unknown)
        health = writer.health()
        fingerprint = chunker_fingerprint(embedder)
        chunker = fingerprint if health.generation is None or health.chunker == fingerprint else None
        stored = [StoredDocument(d, "api", content_hash(d)) for d in upserts]
        embedded = [0]
        batches = prepare(stored, embedder, writer, root, False, embedded)
        name = writer.apply(ChangeSet(upserts=batches, deletes=list(deletes), chunker=chunker))
        remember(root, engine)
        after_publish(root, embedder)
    return name, embedded[0]


def after_publish(root: Path, embedder: TextModel) -> None:
    """Tidy up once a change is published: the progress cache is no longer needed. The change is
    already committed, so a failure here (a full disk) is logged, never reported as a failed write."""
    try:
        EmbeddingCache(root, cache_model(embedder), embedder.dimension).clear()  # the index holds them now
    except OSError as exc:  # a full disk, or the cache's WriteFailed
        log.warning("published, but could not tidy %s: %s", root, exc)


def cache_model(embedder: TextModel) -> str:
    """The embedding cache's name for what it holds: the model's, and how its word pieces are made."""
    return f"{embedder.name} {pieces.PIECES_FORMAT}"


def chunker_fingerprint(embedder: TextModel) -> str:
    """Changes whenever the passages of a document could: the chunking code, the token-span code
    it is given, the word pieces kept for late interaction (indexer/model/pieces.py), the keyword terms
    of a passage (indexer/text/keyword.py), the model (its tokenizer) or its window. A change rebuilds
    every segment (reusing every vector whose input is unchanged); an edit to those modules' comments,
    docstrings or layout alone is no change (code_of)."""
    code = "\x00".join(code_of(Path(module.__file__)) for module in (chunking, pooling, pieces, keyword))
    return hashlib.sha256(f"{code}\x00{embedder.name}\x00{embedder.max_tokens}".encode()).hexdigest()[:16]


def code_of(path: Path) -> str:
    """A module's code without its comments, docstrings and layout: the syntax tree, docstrings
    dropped, written back out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def prepare(documents: list[StoredDocument], embedder: TextModel, writer: IndexWriter, root: Path,
            progress: bool | None, embedded: list[int], remote: Embedding | None = None
            ) -> Iterator[list[PreparedDocument]]:
    """Chunk and embed documents, yielding batches of about BATCH_PASSAGES passages (so a large
    build holds one batch of vectors at a time); vectors the segments or the cache already hold
    are reused. embedded[0] counts the passages that had to be embedded. progress: a bar (True),
    nothing (False), or a bar on a terminal and log lines elsewhere (None)."""
    batch: list[tuple] = []
    size = 0
    shown = BuildProgress(len(documents), progress)
    try:
        for stored in documents:
            job = chunk(stored, embedder)
            batch.append(job)
            size += len(job[1])
            if size >= BATCH_PASSAGES:
                yield embed_batch(batch, embedder, writer, root, shown, embedded, remote)
                batch, size = [], 0
        if batch:
            yield embed_batch(batch, embedder, writer, root, shown, embedded, remote)
    finally:
        shown.close()


def chunk(stored: StoredDocument, embedder: TextModel) -> tuple:
    """(stored, passages, model inputs, sentence spans in the inputs, cache keys, sentence spans in the document)."""
    document = stored.document
    passages = chunk_document(document, embedder.token_spans, embedder.max_tokens)
    if not passages:
        log.warning("no passages in %s: it holds no article text", document.source)
    inputs, spans, keys, document_spans = [], [], [], []
    for passage in passages:
        text, offset = embedding_input(passage)
        found = sentence_spans(document.text, passage.start, passage.end)
        # The model sees context + passage, so sentence offsets shift into the input string.
        shifted = [(s - passage.start + offset, e - passage.start + offset) for s, e in found]
        inputs.append(text)
        spans.append(shifted)
        keys.append(cache_key(text, shifted))
        document_spans.append(found)
    return stored, tuple(passages), inputs, spans, keys, document_spans


def embed_batch(jobs: list[tuple], embedder: TextModel, writer: IndexWriter, root: Path,
                shown: BuildProgress, embedded: list[int], remote: Embedding | None = None) -> list[PreparedDocument]:
    all_keys = [k for job in jobs for k in job[4]]
    # The cache carries a killed build's progress; an encoder faster than the cache opts out.
    cache = EmbeddingCache(root, cache_model(embedder), embedder.dimension) \
        if getattr(embedder, "cache_vectors", True) else None
    # What an index built before word pieces holds lacks them (None): embedded again.
    found = {key: held for key, held in writer.embedded(all_keys).items() if held[2] is not None}
    if cache is not None:
        found.update(cache.get_many([k for k in all_keys if k not in found]))
    missing = [(i, j) for i, job in enumerate(jobs) for j, key in enumerate(job[4]) if key not in found]
    inputs: dict[str, tuple[str, list]] = {}  # each missing input once, by key
    holders: dict[str, list[int]] = {}  # the documents waiting for it
    for i, j in missing:
        key = jobs[i][4][j]
        inputs.setdefault(key, (jobs[i][2][j], jobs[i][3][j]))
        holders.setdefault(key, []).append(i)
    left = Counter(i for i, _ in missing)  # vectors each document still waits for
    shown.expect(len(jobs), len(inputs))
    shown.advance(len(jobs) - len(left))
    keys = list(inputs)
    stream = (remote or LocalEmbedding(embedder)).embed(keys, [inputs[k][0] for k in keys], [inputs[k][1] for k in keys])
    for done_keys, vectors, sentences, codes in stream:
        fresh = list(zip(done_keys, vectors, sentences, codes))
        if cache is not None:
            cache.put_many(fresh)
        found.update((key, (v, s, p)) for key, v, s, p in fresh)
        finished = 0
        for key in done_keys:
            for i in holders[key]:
                left[i] -= 1
                finished += left[i] == 0
        shown.advance(finished, len(done_keys))
    embedded[0] += len(missing)
    dimension = embedder.dimension
    return [PreparedDocument(
        stored=stored, passages=passages, keys=tuple(keys),
        vectors=np.array([found[k][0] for k in keys], dtype=np.float32).reshape(-1, dimension),
        sentence_spans=np.array([s for spans_ in document_spans for s in spans_], dtype=np.int64).reshape(-1, 2),
        sentence_vectors=np.vstack([np.asarray(found[k][1], np.float32).reshape(-1, dimension) for k in keys]
                                   or [np.zeros((0, dimension), np.float32)]),
        sentence_counts=tuple(len(s) for s in document_spans),
        pieces=tuple(np.asarray(found[k][2], np.int8).reshape(-1, PIECE_DIMENSION) for k in keys))
        for stored, passages, _, _, keys, document_spans in jobs]


class Embedding(Protocol):
    """Where passages are embedded: here (LocalEmbedding) or on a Ray cluster (indexer/model/ray_embed.py)."""

    def embed(self, keys: Sequence[str], texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]
              ) -> Iterator[tuple[list[str], np.ndarray, list[np.ndarray], list[np.ndarray]]]:
        """(keys, their vectors, each one's sentence vectors, each one's word piece codes), a part
        at a time, in any order."""


class LocalEmbedding:
    """The model on this machine, CACHE_FLUSH passages at a time (each part goes to the cache)."""

    def __init__(self, embedder: TextModel) -> None:
        self.embedder = embedder

    def embed(self, keys, texts, spans):
        for first in range(0, len(keys), CACHE_FLUSH):
            part = slice(first, first + CACHE_FLUSH)
            vectors, sentences, codes = self.embedder.embed_passages(list(texts[part]), list(spans[part]), False,
                                                                     pieces=True)
            yield (list(keys[part]), vectors, np.split(sentences, np.cumsum([len(s) for s in spans[part]])[:-1]),
                   codes)


class VectorsOf:
    """A writer stand-in for prepare(): the vectors another engine holds, by embedding input."""

    def __init__(self, writer: IndexWriter) -> None:
        self.writer = writer

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        return self.writer.embedded(keys)


def move_index(root: Path, embedder: TextModel, source: Engine, target: Engine,
               progress: bool | None = None) -> BuildSummary:
    """Copy every document the source engine serves, with its origin and its vectors, into the
    target engine in one commit, and record the target as the index's engine. Passages are cut
    again with the code in use; only those whose input changed since the build are embedded."""
    with build_lock(root):
        started = time.perf_counter()
        reader = source.reader()
        total, listed = reader.document_ids(0, 0)
        _, listed = reader.document_ids(0, total)
        stored = []
        for doc_id, *_ in listed:
            kept = reader.document(doc_id)
            stored.append(StoredDocument(kept.document, kept.origin, content_hash(kept.document)))
        if not stored:
            raise DocumentError(f"the index at {root} holds no documents to move")
        embedded = [0]
        batches = prepare(stored, embedder, VectorsOf(source.writer()), root, progress, embedded)
        writer = target.writer()
        name = writer.apply(ChangeSet(upserts=batches, replace_all=True, chunker=chunker_fingerprint(embedder)))
        remember(root, target)
        after_publish(root, embedder)
        health = writer.health()
    return BuildSummary(Path(root) / name, Changes(tuple(d.document.doc_id for d in stored), (), (), 0),
                        health.documents, health.passages, health.sentences, embedded[0],
                        time.perf_counter() - started)
