"""Searches of one generation of a Milvus index: dense and keyword lists, fetches, filters."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from indexer.model import pieces as word_pieces
from indexer.text import neardup
from indexer.text.documents import Document
from indexer.index.engine import IndexInfo, KeptDocument, Selection, StoredPassage
from indexer.text.keyword import bm25, idf
from indexer.text.metadata import NO_DATE, Filters, Metadata
from indexer.engines.milvus.client import IN_VALUES, KEYWORD, Milvus, Names, among, chunks, filter_expression, visible
from indexer.engines.milvus.schema import (PASSAGE_OUT, SENTENCES, generation_name, info_of, layout_of, metadata_of,
                                           passage_of, pieces_of, sentence_keys, term_key, unpacked)


META = ("doc_number", "published", "signature", "metadata", "section")
META_KEPT = 10_000  # passages whose META fields a reader keeps (a few KB each, the signature most)


class MilvusReader:
    """One committed generation of the index, as search sees it (IndexReader)."""

    remote = True  # every search is round trips to Milvus's server (Milvus Lite's too)

    def __init__(self, milvus: Milvus, state: dict, table: TermTable | None = None) -> None:
        self.milvus, self.state = milvus, state
        self.names = Names.of(milvus.collection, state["build"])
        self.G = int(state["generation"])
        self.generation = generation_name(state)
        self.live = visible(self.G)
        self.frequencies: dict[str, int] = {}
        # Every term's document frequency as of this generation, when the engine keeps them (a
        # service does): then a search asks Milvus nothing about terms.
        self.table = table.of(state) if table is not None else None
        self.described: dict[int, dict] = {}  # META fields of passages looked up (rows never change them)

    @property
    def info(self) -> IndexInfo:
        return info_of(self.state)

    def where(self, expression: str = "") -> str:
        return f"{self.live} and ({expression})" if expression else self.live

    def select(self, filters: Filters) -> Selection:
        # size: an upper bound (counting costs Milvus Lite a scan); searches find nothing when none match
        return Selection({"expression": filter_expression(filters)}, self.state["passages"])

    def restricted(self, selection: Selection | None) -> str:
        return self.where(selection.parts["expression"] if selection is not None else "")

    def dense(self, vector: np.ndarray, depth: int, selection: Selection | None = None,
              exact: bool = False, described: bool = False) -> list[tuple[int, float]]:
        found = self.milvus.search(self.names.passages, [np.asarray(vector, np.float32).tolist()], "vector", "IP",
                                   depth, self.restricted(selection), META if described else ())
        self.remember(found, described)
        return [(int(hit["id"]), float(hit["distance"])) for hit in found]

    def remember(self, found: list[dict], described: bool) -> None:
        """Keep the META fields a list brought back (described), for the stages that ask next."""
        if described and found:
            known = self.described if len(self.described) <= META_KEPT else {}
            known.update((int(hit["id"]), {"id": int(hit["id"]), **hit["entity"]}) for hit in found)
            self.described = known

    def keyword(self, terms: list[str], depth: int, selection: Selection | None = None,
                described: bool = False) -> list[tuple[int, float]]:
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
                                   self.restricted(selection), [*(["terms"] if exact else []),
                                                                *(META if described else ())])
        self.remember(found, described)
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
        if self.table is not None:
            return {t: idf(self.table.get(term_key(t), 0), self.state["passages"]) for t in dict.fromkeys(terms)}
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

    def meta(self, ids: Sequence[int]) -> dict[int, dict]:
        """The META fields of these passages: every one a search's stages ask about (grouping,
        collapsing, facets, dates) fetched in one query the first time any of them is asked for."""
        known = self.described  # only ever added to; a full one is replaced whole, never emptied
        wanted = [i for i in dict.fromkeys(int(i) for i in ids) if i not in known]
        found = self.rows(wanted, list(META)) if wanted else {}
        if len(known) > META_KEPT:
            self.described = found
        else:
            known.update(found)
        return {int(i): row for i in ids if (row := found.get(int(i)) or known.get(int(i))) is not None}

    def published(self, ids: Sequence[int]) -> np.ndarray:
        rows = self.meta(ids)
        return np.array([rows[int(i)]["published"] if int(i) in rows else NO_DATE for i in ids], dtype=np.int64)

    def signatures(self, ids: Sequence[int]) -> np.ndarray:
        rows = self.meta(ids)
        marks = np.full((len(ids), neardup.PERMUTATIONS), neardup.EMPTY, dtype=np.uint32)
        for n, i in enumerate(ids):
            if int(i) in rows:
                marks[n] = np.asarray(rows[int(i)]["signature"], dtype=np.int64).astype(np.uint32)
        return marks

    def describe(self, ids: Sequence[int]) -> dict[int, tuple[int, Metadata, str]]:
        return {i: (int(row["doc_number"]), metadata_of(row), row["section"]) for i, row in self.meta(ids).items()}

    def documents_of(self, ids: Sequence[int]) -> dict[int, int]:
        return {i: int(row["doc_number"]) for i, row in self.meta(ids).items()}

    def pieces(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Each passage's word piece codes: one query (a build before layout 3 has none)."""
        if layout_of(self.state) < 3 or self.state.get("pieces") != word_pieces.PIECES_FORMAT or not len(ids):
            return {}  # none kept, or made another way
        return {i: pieces_of(row["pieces"]) for i, row in self.rows(ids, ["pieces"]).items()}

    def fetch(self, ids: Sequence[int]) -> dict[int, StoredPassage]:
        """The passages with their sentences: one query (a layout 1 build: two)."""
        dimension = self.state["model"]["dimension"]
        if layout_of(self.state) >= 2:
            rows = self.rows(ids, [*PASSAGE_OUT[1:], "sentence_vectors"])
            sentences = {i: unpacked(row["sentence_vectors"], dimension) for i, row in rows.items()}
        else:
            rows = self.rows(ids, PASSAGE_OUT[1:])
            sentences = sentence_vectors(self.milvus, self.names, rows, dimension)
        return {i: StoredPassage(i, passage_of(row), np.asarray(row["spans"], np.int64).reshape(-1, 2),
                                 sentences.get(i, np.zeros((0, dimension), np.float32)), metadata_of(row))
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


def sentence_vectors(milvus: Milvus, names: Names, rows: dict[int, dict], dimension: int) -> dict[int, np.ndarray]:
    """The sentence vectors of each passage (rows by id, with their spans), in order."""
    found: dict[int, list] = {}
    for part in chunks(sentence_keys(rows), IN_VALUES):
        for row in milvus.query(names.sentences, among("id", part), ["vector"]):
            found.setdefault(int(row["id"]) // SENTENCES, []).append((int(row["id"]), row["vector"]))
    return {i: np.array([v for _, v in sorted(found[i])], dtype=np.float32).reshape(-1, dimension)
            for i in rows if i in found}


class TermTable:
    """Every term's document frequency as of one generation of one build, kept by a long-running
    process (the service) so that searches need not ask. A term's row records the generation of
    the write that last changed it, so moving to a newer generation reads only the rows changed
    since (one query per write, made by the service's watcher, not by a search). The values of a
    generation are never changed: a move makes a new dict, and readers of the old one keep it."""

    def __init__(self) -> None:
        self.snapshot: tuple[str | None, int, dict[int, int]] = (None, -1, {})  # replaced whole
        self.moving = threading.Lock()

    def of(self, state: dict) -> dict[int, int] | None:
        """The frequencies as of state's generation, if the table is there."""
        build, generation, values = self.snapshot
        return values if (build, generation) == (state["build"], int(state["generation"])) else None

    def follow(self, milvus: Milvus, state: dict) -> int:
        """Bring the table to state's generation; returns the term rows read."""
        with self.moving:
            build, at, values = self.snapshot
            generation = int(state["generation"])
            if (build, at) == (state["build"], generation):
                return 0
            whole = build != state["build"] or generation < at
            values = {} if whole else dict(values)
            rows = 0
            for row in milvus.scan(Names.of(milvus.collection, state["build"]).terms,
                                   "" if whole else f"generation > {at}", ["id", "df", "generation", "previous"]):
                values[int(row["id"])] = int(row["df"] if row["generation"] <= generation else row["previous"])
                rows += 1
            self.snapshot = (state["build"], generation, values)
            return rows


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
