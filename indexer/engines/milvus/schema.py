"""The rows the Milvus engine keeps: the fields of each collection, and rows as the seam's records."""

from __future__ import annotations

import base64
import hashlib

import numpy as np

from indexer.model.pieces import PIECE_DIMENSION
from indexer.text import neardup
from indexer.text.chunking import Passage
from indexer.text.documents import StoredDocument
from indexer.index.engine import IndexInfo
from indexer.text.metadata import Metadata
from indexer.engines.milvus.client import ALIVE, FILTER_BYTES, PARTS, TEXT_PART, clip


PASSAGE_FIELDS = [("born", "int"), ("died", "int"), ("doc_number", "int"), ("doc_id", "text", 4096),
                  ("passage_key", "text", 8192), ("title", "text", 8192), ("source", "text", 8192),
                  ("section", "text", 8192), ("paragraph", "int"), ("start", "int"), ("stop", "int"),
                  ("text", "text"), ("terms", "terms"), ("vector", "vector"), ("key", "text", 256),
                  ("published", "int"), ("metadata", "text"), ("outlet", "text", FILTER_BYTES),
                  ("language", "text", FILTER_BYTES), ("language_base", "text", FILTER_BYTES),
                  ("authors", "strings", 256), ("tags", "strings", 256),
                  ("signature", "ints", neardup.PERMUTATIONS), ("spans", "ints", 4096)]
SENTENCE_FIELDS = [("born", "int"), ("vector", "vector")]  # id: passage id * SENTENCES + position (layout 1)
# Layout 2 (builds since sentence vectors moved): a passage row holds its sentences' vectors, so the
# page of a search is one query. Layout 1 builds keep them in a collection of their own. Layout 3
# (builds since late interaction): a passage row also holds its word pieces' codes (pieces_of).
LAYOUT = 3
PIECES_LENGTH = 4 * -(-256 * PIECE_DIMENSION // 3)  # base64 of a full window's codes

TERM_FIELDS = [("term", "text", 8192), ("df", "int"), ("generation", "int"), ("previous", "int")]
SENTENCES = 4096  # sentence keys per passage (a passage of 256 tokens holds far fewer)
DOCUMENT_FIELDS = [("born", "int"), ("died", "int"), ("doc_number", "int"), ("part", "int"),
                   ("doc_id", "text", 4096), ("title", "text", 8192), ("source", "text", 8192),
                   ("origin", "text", 16), ("content_hash", "text", 128), ("metadata", "text"), ("text", "text")]
PASSAGE_OUT = ["id", "doc_number", "doc_id", "passage_key", "title", "source", "section", "paragraph", "start",
               "stop", "text", "metadata", "spans"]


def info_of(state: dict) -> IndexInfo:
    """What the committed state says of its generation (Milvus keeps no segments of its own)."""
    return IndexInfo(generation_name(state), (state.get("model") or {}).get("name"), state.get("chunker"),
                     state["documents"], state["passages"], state["sentences"], None, state.get("built_at"))


def passage_of(row: dict) -> Passage:
    return Passage(row["passage_key"], row["doc_id"], row["title"], row["source"], row["section"],
                   int(row["paragraph"]), int(row["start"]), int(row["stop"]), row["text"])


def metadata_of(row: dict) -> Metadata:
    return Metadata.from_json(row["metadata"]) if row.get("metadata") else Metadata()


def fields_of(layout: int, dimension: int) -> list[tuple]:
    """A build's passage fields (layout 2: with its sentences' vectors, SENTENCES at most; layout 3:
    and its word pieces' codes)."""
    vectors = ("sentence_vectors", "blobs", SENTENCES, packed_length(dimension))
    pieces = ("pieces", "text", PIECES_LENGTH)
    return PASSAGE_FIELDS + [vectors, pieces][:max(layout - 1, 0)]


def packed_pieces(codes: np.ndarray) -> str:
    """A passage's word piece codes (int8, (k, PIECE_DIMENSION)) as its row keeps them: base64."""
    return base64.b64encode(np.asarray(codes, np.int8).tobytes()).decode("ascii")


def pieces_of(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.int8).reshape(-1, PIECE_DIMENSION)


def layout_of(state: dict) -> int:
    return int(state.get("layout", 1))


def packed(vectors: np.ndarray) -> list[str]:
    """Sentence vectors as a passage row keeps them: each one half precision (as the FAISS engine
    keeps them: they only pick the answering sentence), in base64."""
    halves = np.asarray(vectors, dtype=np.float16)
    return [base64.b64encode(v.tobytes()).decode("ascii") for v in halves]


def unpacked(items: list[str], dimension: int) -> np.ndarray:
    """A passage row's sentence vectors, float32 (m, dimension)."""
    if not items:
        return np.zeros((0, dimension), np.float32)
    return np.frombuffer(b"".join(base64.b64decode(i) for i in items), np.float16).astype(np.float32).reshape(-1, dimension)


def packed_length(dimension: int) -> int:
    """The base64 characters of one half-precision vector."""
    return 4 * -(-2 * dimension // 3)


def sentence_keys(rows: dict[int, dict]) -> list[int]:
    """The sentence rows' keys of passages (rows with their spans)."""
    return [i * SENTENCES + n for i, row in rows.items() for n in range(len(row["spans"]) // 2)]


def term_key(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def generation_name(state: dict) -> str:
    return f"milvus-{state['build']}-g{state['generation']}"


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
