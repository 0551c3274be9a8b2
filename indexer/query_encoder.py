"""Query vectors with ONNX Runtime and tokenizers only: no torch, no sentence-transformers.

A search-only process (`semsearch search`) starts in about 0.5 s this way instead of 4 s, most
of which is importing sentence-transformers. The Embedder writes a recipe (ONNX file, its exact
tokenizer, window, dimension) once it has checked the model is transformer + mean pooling;
without a usable recipe, callers load the full Embedder, which writes one for next time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
RECIPE = "recipe.json"
TOKENIZER = "tokenizer.json"
RECIPE_VERSION = 1


def session_options(threads: int, spin: bool):
    """threads: per-call CPU threads (0: the runtime's default); spin: idle threads busy-wait."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


class QueryEncoder:
    """One unit-length vector per query: a single unpadded input, so the plain mean of its token
    vectors is the model's mean pooling (and no per-call tensor conversions, about 0.5 ms)."""

    def __init__(self, name: str, tokenizer, session, dimension: int, max_tokens: int) -> None:
        self.name = name
        self.dimension = dimension
        self.tokenizer = tokenizer  # a tokenizers.Tokenizer of its own, reconfigured here
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    def embed_query(self, text: str) -> np.ndarray:
        encoding = self.tokenizer.encode(text)
        values = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask,
                  "token_type_ids": encoding.type_ids}
        tokens = self.session.run(None, {name: np.array([values[name]], dtype=np.int64) for name in self.inputs})[0][0]
        vector = tokens.mean(axis=0)
        return (vector / np.linalg.norm(vector)).astype(np.float32)


def save_recipe(folder: Path, onnx_file: Path, tokenizer, dimension: int, max_tokens: int) -> None:
    """Write the recipe once per model version (atomically: a reader sees all of it or none)."""
    if (folder / RECIPE).is_file():
        return
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / TOKENIZER).write_text(tokenizer.to_str(), encoding="utf-8")
        (staging / RECIPE).write_text(json.dumps({"version": RECIPE_VERSION, "onnx": str(onnx_file.resolve()),
                                                  "dimension": dimension, "max_tokens": max_tokens}))
        os.rename(staging, folder)
    except OSError as exc:  # another process wrote it first, or the cache is read-only: only speed is lost
        log.info("query recipe not written to %s: %s", folder, exc)
        shutil.rmtree(staging, ignore_errors=True)


def load_recipe(folder: Path, name: str, threads: int, spin: bool) -> QueryEncoder | None:
    """The encoder a recipe describes, or None when there is none or it no longer loads (then it is
    removed, so the next Embedder writes a fresh one)."""
    if not (folder / RECIPE).is_file():
        return None
    import onnxruntime
    import tokenizers

    try:
        recipe = json.loads((folder / RECIPE).read_text())
        if recipe.get("version") != RECIPE_VERSION:
            raise ValueError(f"recipe version {recipe.get('version')}, this code reads {RECIPE_VERSION}")
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / TOKENIZER))
        session = onnxruntime.InferenceSession(recipe["onnx"], session_options(threads, spin),
                                               providers=["CPUExecutionProvider"])
        return QueryEncoder(name, tokenizer, session, int(recipe["dimension"]), int(recipe["max_tokens"]))
    except Exception as exc:  # noqa: BLE001 - any broken recipe means: take the full path
        log.info("query recipe in %s not usable (%s); loading the full model", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
