"""The stand-in encoder (SEMSEARCH_MODEL_PATH=hashing): deterministic feature-hashing vectors.

It has the model interface of indexer/model/onnx_encoder.py (queries, passages with sentence vectors,
token spans for chunking) without a neural network, so tests of machinery and scale benchmarks
can index a million passages in minutes. Texts that share words get similar vectors, which is
enough to exercise ranking code; it is never the default and never a substitute for the model.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

from indexer.model.pieces import codes, query_pieces

NAME = "hashing"
DIMENSION = 384
MAX_TOKENS = 256  # the real model's window, so chunking cuts passages of the same size
WORD = re.compile(r"\w+|[^\w\s]")
# words() as runs of text: what bytes.split() leaves between ASCII whitespace and punctuation
WORD_RUN = re.compile(r"[^\t\n\x0b\x0c\r !-/:-@\[-`{-~]+")
# Vectors need words, not offsets: ASCII punctuation to spaces and bytes.split is far faster than WORD.
SPACES = bytes.maketrans(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", b" " * 32)


def words(text: str) -> list[bytes]:
    """Lower-cased words as UTF-8 bytes (only ASCII letters change case: a stand-in needs no more)."""
    return text.encode().lower().translate(SPACES).split()


class HashingEncoder:
    """Each lower-cased word adds +-1 to one of 384 coordinates (chosen by its CRC-32); unit length."""

    name = NAME
    dimension = DIMENSION
    max_tokens = MAX_TOKENS
    cache_vectors = False  # recomputing is cheaper than the build's progress cache (indexer/index/build.py)

    def __init__(self) -> None:
        self.buckets: dict[bytes, int] = {}  # word -> signed coordinate + 1; words repeat a lot

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of each word and punctuation mark: the stand-in's word pieces."""
        return [match.span() for match in WORD.finditer(text)]

    def count_tokens(self, text: str) -> int:
        return len(WORD.findall(text))

    def signed(self, words: list[bytes]) -> np.ndarray:
        """Each word's coordinate + 1, negated for words that subtract."""
        found = list(map(self.buckets.get, words))  # C-level lookups: this runs on every word
        if None in found:
            for i, word in enumerate(words):
                if found[i] is None:
                    code = zlib.crc32(word)
                    found[i] = self.buckets[word] = ((code >> 1) % DIMENSION + 1) * (1 if code & 1 else -1)
        return np.array(found, dtype=np.int64)

    def raw(self, bags: list[list[bytes]], owners: np.ndarray | None = None, rows: int = 0):
        """Signed word counts per bag as a sparse (bags, 384) matrix; with owners, per owner
        (owners[i] owns bag i) as a (rows, 384) one."""
        from scipy.sparse import csr_matrix

        counts = np.fromiter((len(bag) for bag in bags), dtype=np.int64, count=len(bags))
        signed = self.signed([word for bag in bags for word in bag])
        owners = np.arange(len(bags), dtype=np.int64) if owners is None else owners
        return csr_matrix((np.sign(signed).astype(np.float32), (np.repeat(owners, counts), np.abs(signed) - 1)),
                          shape=(rows or len(bags), DIMENSION), dtype=np.float32)  # sums repeats

    @staticmethod
    def unit(matrix: np.ndarray) -> np.ndarray:
        """Rows scaled to unit length; an all-zero row (no words, or words that cancel) becomes e0."""
        norms = np.linalg.norm(matrix, axis=1)
        matrix[norms == 0, 0], norms[norms == 0] = 1.0, 1.0
        matrix /= norms[:, None]
        return matrix

    def embed_query(self, text: str) -> np.ndarray:
        return self.unit(self.raw([words(text)]).toarray())[0]

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        return self.unit(self.raw([words(t) for t in texts]).toarray())

    def word_vectors(self, text: str) -> np.ndarray:
        """One unit vector per word: the stand-in's token vectors."""
        found = words(text)
        return self.raw([[w] for w in found]).toarray() if found else np.zeros((0, DIMENSION), np.float32)

    def embed_query_pieces(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The query's vector, its words as pieces, and each word's (start, end) in the text."""
        spans = np.array([m.span() for m in WORD_RUN.finditer(text)], dtype=np.int64).reshape(-1, 2)
        pieces = query_pieces(self.word_vectors(text))
        return self.embed_query(text), pieces, spans if len(spans) == len(pieces) else np.zeros((0, 2), np.int64)

    def embed_passages(self, inputs: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                       progress: bool | None = None, pieces: bool = False) -> tuple:
        """Vectors for inputs plus one per (start, end) char span of each input, as the model gives
        (a span without words gets its passage's vector, as a truncated sentence does); with
        pieces, each input's words inside its spans as late-interaction codes.

        Each input is cut once at its span boundaries, so every word is hashed once: a span's
        vector is its piece's, the input's the sum of its pieces.
        """
        from scipy.sparse import csr_matrix

        pieces: list[list[bytes]] = []
        owners, sentence_pieces = [], []
        for i, (text, wanted) in enumerate(zip(inputs, spans)):
            size = len(text)
            cuts = sorted({0, size, *(min(max(x, 0), size) for span in wanted for x in span)})
            at = {cut: n for n, cut in enumerate(cuts)}
            sentence_pieces.extend(len(pieces) + at[min(max(start, 0), size)] for start, _ in wanted)
            if text.isascii():  # char offsets are byte offsets: clean the whole text once
                clean = text.encode().lower().translate(SPACES)
                pieces.extend(clean[a:b].split() for a, b in zip(cuts, cuts[1:]))
            else:
                pieces.extend(words(text[a:b]) for a, b in zip(cuts, cuts[1:]))
            owners.extend([i] * (len(cuts) - 1))
        raw = self.raw(pieces)
        owner = csr_matrix((np.ones(len(owners), np.float32), (owners, np.arange(len(owners)))),
                           shape=(len(inputs), len(owners)))
        passages = self.unit((owner @ raw).toarray())
        sentences = raw[np.array(sentence_pieces, dtype=np.int64)].toarray()
        empty = ~sentences.any(axis=1)
        sentences = self.unit(sentences)
        sentences[empty] = passages[np.repeat(np.arange(len(inputs)), [len(w) for w in spans])[empty]]
        if not pieces:
            return passages, sentences
        return passages, sentences, [codes(self.word_vectors(" ".join(text[a:b] for a, b in wanted)))
                                     for text, wanted in zip(inputs, spans)]
