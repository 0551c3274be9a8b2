"""The storage seam: what search and build need from an index engine, whichever engine it is.

search.py ranks, fuses and highlights through IndexReader; build.py prepares documents (chunked
and embedded) and hands them to IndexWriter.apply. The FAISS segments in index/ (indexer/store.py,
indexer/segments.py) are one implementation; no engine's types cross this line. Passages are
named by stable int64 ids that the engine hands out and never reuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

import numpy as np

from indexer.chunking import Passage
from indexer.documents import StoredDocument


@dataclass(frozen=True)
class StoredPassage:
    """What a page of results needs of one passage: its text and source, and its sentences."""

    id: int
    passage: Passage
    sentence_spans: np.ndarray     # (k, 2) document offsets
    sentence_vectors: np.ndarray   # (k, dim) float32, unit length


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


class IndexReader(Protocol):
    """One consistent snapshot of an index, as search sees it."""

    generation: str
    manifest: dict

    def counts(self) -> dict[str, int]: ...

    def select(self, doc_ids: Sequence[str], sources: Sequence[str]) -> Selection: ...

    def dense(self, vector: np.ndarray, depth: int, selection: Selection | None = None,
              exact: bool = False) -> list[tuple[int, float]]: ...

    def keyword(self, terms: list[str], depth: int,
                selection: Selection | None = None) -> list[tuple[int, float]]: ...

    def term_weights(self, terms: list[str]) -> dict[str, float]: ...

    def documents_of(self, ids: Sequence[int]) -> dict[int, int]: ...

    def fetch(self, ids: Sequence[int]) -> dict[int, StoredPassage]: ...


class IndexWriter(Protocol):
    """Applies change sets; each apply is atomic and leaves a snapshot readers can open."""

    def live_documents(self, doc_ids: Sequence[str] | None = None) -> dict[str, LiveDocument]: ...

    def embedded(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]: ...

    def apply(self, changes: ChangeSet) -> str: ...

    def health(self) -> dict: ...
