"""Passage and sentence vectors from a model's token vectors, whichever runtime produced them."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from indexer.model.pieces import PIECE_DIMENSION, codes, query_pieces

BATCH_SIZE = 32


class PassageEmbedding:
    """What both model runtimes share, given dimension, span_tokenizer (a tokenizers.Tokenizer
    without padding or truncation) and forward(texts) -> (unit pooled vectors, token vectors,
    token char offsets) for one padded batch."""

    dimension: int
    span_tokenizer: Any

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) char offsets of the word pieces the model would see for text, no special tokens."""
        return self.span_tokenizer.encode(text, add_special_tokens=False).offsets

    def count_tokens(self, text: str) -> int:
        return len(self.token_spans(text))

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> tuple[list, list[int]]:
        """What infer() takes for each text, and its length in word pieces (batches are formed
        longest first, so each pads little). By default the texts themselves."""
        return texts, [len(e.ids) for e in self.span_tokenizer.encode_batch(texts, add_special_tokens=False)]

    def infer(self, batch: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """forward() for what tokenize() gave for a batch of texts; runs in a worker thread."""
        return self.forward(batch)

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Unit-length vectors for texts."""
        vectors, _ = self.embed_passages(texts, [[] for _ in texts], progress)
        return vectors

    def embed_query_pieces(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A query's vector, its word pieces for late interaction (indexer/model/pieces.py) and
        each piece's (start, end) in the text."""
        pooled, tokens, offsets = self.forward([text])
        real = offsets[0, :, 1] > offsets[0, :, 0]  # no special or padding tokens
        return pooled[0], query_pieces(tokens[0][real]), np.asarray(offsets[0][real], dtype=np.int64).reshape(-1, 2)

    def embed_passages(self, inputs: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                       progress: bool | None = None, pieces: bool = False) -> tuple:
        """Vectors for inputs, plus one vector per (start, end) char span of each input; with
        pieces, also each input's word pieces inside its spans as int8 codes (indexer/model/pieces.py).

        A span's vector is the mean of the passage's contextual token vectors inside it: the
        same forward pass gives all three, so neither marking the answering sentence nor late
        interaction costs an embedding more.
        """
        from tqdm import tqdm

        passage_vectors = np.zeros((len(inputs), self.dimension), dtype=np.float32)
        span_vectors: list[list[np.ndarray]] = [[] for _ in inputs]
        piece_codes: list[np.ndarray] = [np.zeros((0, PIECE_DIMENSION), np.int8)] * len(inputs)
        prepared, lengths = self.tokenize(list(inputs))
        order = sorted(range(len(inputs)), key=lambda i: -lengths[i])
        batches = [order[first:first + BATCH_SIZE] for first in range(0, len(order), BATCH_SIZE)]
        show = sys.stderr.isatty() and len(inputs) > BATCH_SIZE if progress is None else progress

        def collect(batch: list[int], running: Future) -> None:
            pooled, tokens, offsets = running.result()
            for row, i in enumerate(batch):
                passage_vectors[i] = pooled[row]
                span_vectors[i] = pool_spans(tokens[row], offsets[row], spans[i], pooled[row])
                if pieces:
                    piece_codes[i] = codes(tokens[row][inside_spans(offsets[row], spans[i])])
            bar.update(len(batch))

        # The model runs one batch in a worker thread (the runtimes release the GIL) while this
        # thread pools the previous batch's sentence vectors, so the cores never wait for Python.
        with tqdm(total=len(inputs), unit="passage", desc="embedding", disable=not show) as bar, \
                ThreadPoolExecutor(1, thread_name_prefix="embedding") as worker:
            previous = None
            for batch in batches:
                running = worker.submit(self.infer, [prepared[i] for i in batch])
                if previous is not None:
                    collect(*previous)
                previous = (batch, running)
            if previous is not None:
                collect(*previous)
        flat = [vector for vectors in span_vectors for vector in vectors]
        sentences = np.vstack(flat).astype(np.float32) if flat else np.zeros((0, self.dimension), np.float32)
        return (passage_vectors, sentences, piece_codes) if pieces else (passage_vectors, sentences)


def inside_spans(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Which tokens (by char offsets) are real and lie inside one of the spans."""
    real = offsets[:, 1] > offsets[:, 0]
    inside = np.zeros(len(offsets), dtype=bool)
    for start, end in spans:
        inside |= (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
    return real & inside


def pool_spans(tokens: np.ndarray, offsets: np.ndarray, spans: Sequence[tuple[int, int]],
               fallback: np.ndarray) -> list[np.ndarray]:
    """Unit mean vector of the tokens inside each char span; fallback where none are (truncated)."""
    real = offsets[:, 1] > offsets[:, 0]  # special and padding tokens have empty offsets
    vectors = []
    for start, end in spans:
        inside = real & (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
        if not inside.any():
            vectors.append(fallback)
            continue
        mean = tokens[inside].mean(axis=0)
        vectors.append(mean / (np.linalg.norm(mean) or 1.0))
    return vectors
