"""Changes to a Milvus index: rows born at the next generation, then one commit of the state."""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

import numpy as np

from indexer.model import pieces as word_pieces
from indexer.text import neardup
from indexer.text.documents import Document, StoredDocument
from indexer.index.engine import ChangeSet, IndexInfo, IndexUnavailable, LiveDocument, PreparedDocument, WriteFailed
from indexer.text.keyword import passage_terms
from indexer.text.metadata import NO_DATE, epoch
from indexer.engines.milvus.client import ALIVE, IN_VALUES, Milvus, Names, among, chunks, clip, visible
from indexer.engines.milvus.schema import (DOCUMENT_FIELDS, LAYOUT, SENTENCES, SENTENCE_FIELDS, TERM_FIELDS,
                                           document_rows, fields_of, generation_name, info_of, layout_of,
                                           metadata_fields, metadata_of, packed, packed_pieces, pieces_of, term_key,
                                           unpacked)
from indexer.engines.milvus.reader import MilvusReader, frequencies, sentence_vectors


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

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        state = self.state()
        if state is None or not keys:
            return {}
        layout = layout_of(state) if state.get("pieces") == word_pieces.PIECES_FORMAT else min(layout_of(state), 2)
        names, rows, inline = Names.of(self.milvus.collection, state["build"]), {}, layout >= 2
        fields = ["key", "vector", "spans", *(["sentence_vectors"] if inline else []),
                  *(["pieces"] if layout >= 3 else [])]
        for part in chunks(list(dict.fromkeys(keys)), IN_VALUES):
            for row in self.milvus.query(names.passages, among("key", part), fields):
                rows.setdefault(row["key"], row)
        if inline:
            return {key: (np.asarray(row["vector"], np.float32), unpacked(row["sentence_vectors"], self.dimension),
                          pieces_of(row["pieces"]) if layout >= 3 else None)
                    for key, row in rows.items()}
        sentences = sentence_vectors(self.milvus, names, {int(r["id"]): r for r in rows.values()}, self.dimension)
        return {key: (np.asarray(row["vector"], np.float32),
                      sentences.get(int(row["id"]), np.zeros((0, self.dimension), np.float32)), None)
                for key, row in rows.items()}

    def health(self) -> IndexInfo:
        state = self.state()
        return IndexInfo(None) if state is None else info_of(state)

    def apply(self, changes: ChangeSet) -> str:
        """Write the change invisibly, flush, then commit the state: one generation more. A write
        Milvus refuses (a full disk, an outage) raises WriteFailed: the committed state is untouched."""
        try:
            with self.milvus.lease():  # one writer at a time, whichever replica or machine it runs on
                return self.write(changes)
        except IndexUnavailable as exc:
            raise WriteFailed(f"{exc.message} (nothing was published)") from exc

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
        layout = LAYOUT if fresh else layout_of(state)
        if fresh:
            passage_fields = fields_of(layout, self.dimension)
            for name, fields in zip(names.all(), (passage_fields, SENTENCE_FIELDS, DOCUMENT_FIELDS, TERM_FIELDS)):
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
                self.insert(names, batch, generation, counts, counted, layout)
        self.count_terms(names, counted, generation, int((committed or {}).get("generation", 0)) if not fresh else 0)
        for name in names.all():
            milvus.call("flush", name)
        new = {**(committed or {}), "generation": generation, "next_generation": generation + 1, "build": build,
               "layout": layout, "pieces": word_pieces.PIECES_FORMAT if fresh else (committed or {}).get("pieces"),
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
               counted: Counter, layout: int) -> None:
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
                vectors = prepared.sentence_vectors[first:first + count]
                if layout < 2:
                    sentences += [{"id": passage_id * SENTENCES + position, "born": generation,
                                   "vector": np.asarray(vector, np.float32).tolist()}
                                  for position, vector in enumerate(vectors)]
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
                    "spans": np.asarray(spans, np.int64).reshape(-1).tolist(),
                    **({"sentence_vectors": packed(vectors)} if layout >= 2 else {}),
                    **({"pieces": packed_pieces(prepared.pieces[n])} if layout >= 3 else {})})
            counts["documents"] += 1
            counts["passages"] += len(prepared.passages)
            counts["sentences"] += int(sum(prepared.sentence_counts))
            if "terms_total" in counts:
                counts["terms_total"] += sum(len(clip(" ".join(t), 65_535).split()) for t in terms)
        self.milvus.insert(names.documents, documents)
        if sentences:
            self.milvus.insert(names.sentences, sentences)
        self.milvus.insert(names.passages, passages)


def read_documents(milvus: Milvus, state: dict, expression: str) -> list[StoredDocument]:
    """The live documents matching expression, their text put together from its parts."""
    names = Names.of(milvus.collection, state["build"])
    rows = milvus.query(names.documents, f"{visible(int(state['generation']))} and ({expression})",
                        ["doc_number", "part", "doc_id", "title", "source", "origin", "content_hash", "metadata",
                         "text"])
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
    # Term rows that write changed go back to their previous value, as of the committed generation
    # (left as they were, a later commit would make the value that was never committed current).
    changed = milvus.query(names.terms, f"generation > {generation}", ["id", "term", "previous"])
    milvus.upsert(names.terms, [{"id": int(r["id"]), "term": r["term"], "df": int(r["previous"]), "generation": generation,
                                 "previous": int(r["previous"]), "v": [0.0, 0.0]} for r in changed])
