"""The model on ONNX Runtime or OpenVINO and tokenizers alone (no torch, no sentence-transformers):
queries, passages with sentence vectors, and token spans for chunking.

Loading it takes about 0.5 s and 450 MB with a SciFact index, against 4 s and 850 MB for the
sentence-transformers pipeline, most of which is importing torch. The Embedder writes a recipe
(the ONNX file, the exact tokenizer, window, dimension, padding token) once it has checked the
model is transformer + mean pooling; without a usable recipe, callers load the Embedder, which
writes one for next time.

Precisions (each its own model identity, so an index and its embedding cache never mix them):
- `fp32`: ONNX Runtime on the export, the sentence-transformers pipeline's own vectors.
- `bf16`: OpenVINO on the same file, bf16 arithmetic where the CPU has it (AVX-512 BF16, AMX).
- `int8`: OpenVINO with int8 weights (per output channel, symmetric; NNCF, made once and cached
  beside the recipe) and activations quantized to int8 per token as each batch runs, so the
  matrix products run on int8 units (VNNI, AMX) with no calibration text to choose.
Measured on SciFact in docs/benchmarks.md (speed, cosine to fp32, nDCG@10).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from indexer.pooling import PassageEmbedding

log = logging.getLogger(__name__)
RECIPE = "recipe.json"
TOKENIZER = "tokenizer.json"
RECIPE_VERSION = 2  # 2: the padding token, for batches
PRECISIONS = ("fp32", "bf16", "int8")
INT8_FOLDER = "openvino-int8"  # inside the recipe folder: the int8-weight copy of the model
# Activations are quantized in groups of this many values along each token's vector (384: one
# scale per token and matrix product); measured against 64 in docs/benchmarks.md.
DYNAMIC_GROUP = 384
PAD_MULTIPLE = 16


class PrecisionUnavailable(RuntimeError):
    """The runtime a precision needs is missing or cannot run the model."""


def session_options(threads: int, spin: bool):
    """threads: per-call CPU threads (0: the runtime's default); spin: idle threads busy-wait."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


class OrtRunner:
    """Token vectors from an ONNX Runtime session (thread-safe: sessions may be run concurrently)."""

    def __init__(self, session) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]


class OpenVinoRunner:
    """Token vectors from an OpenVINO compiled model; one infer request per thread (a request
    runs one call at a time, the compiled model serves any number)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.local = threading.local()

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        request.infer(feeds)
        return request.get_output_tensor(0).data.copy()  # the request reuses its output buffer


class OnnxEncoder(PassageEmbedding):
    """The model's mean-pooled, unit-length vectors straight from a runner (OrtRunner or
    OpenVinoRunner) of its ONNX graph."""

    def __init__(self, name: str, tokenizer_json: str, runner, dimension: int, max_tokens: int,
                 pad_token: str, pad_id: int) -> None:
        from tokenizers import Tokenizer

        self.name, self.dimension, self.max_tokens = name, dimension, max_tokens
        self.runner = runner
        self.inputs = runner.input_names
        # One tokenizer per use: settings are per object, and batches must not change queries.
        self.query_tokenizer = Tokenizer.from_str(tokenizer_json)  # special tokens, cut at the window
        self.query_tokenizer.no_padding()
        self.query_tokenizer.enable_truncation(max_tokens)
        self.span_tokenizer = Tokenizer.from_str(tokenizer_json)  # whole texts, for chunking
        self.span_tokenizer.no_padding()
        self.span_tokenizer.no_truncation()
        self.pad_id = pad_id
        # Batches padded to a multiple of PAD_MULTIPLE tokens: fewer distinct shapes and aligned rows,
        # about 7 % faster on OpenVINO (docs/benchmarks.md); padding is masked, so vectors are unchanged.
        # Never past the model's window (a window that is no multiple: plain padding).
        self.pad_multiple = PAD_MULTIPLE if max_tokens % PAD_MULTIPLE == 0 else 1

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token vectors (batch, tokens, dimension) for token ids and attention mask (batch, tokens)."""
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return self.runner({name: arrays[name] for name in self.inputs})

    def embed_query(self, text: str) -> np.ndarray:
        """One query: a single unpadded input, so the plain mean of its token vectors is the
        model's mean pooling (and no per-call tensor conversions, about 0.5 ms)."""
        ids = np.array([self.query_tokenizer.encode(text).ids], dtype=np.int64)
        vector = self.run(ids, np.ones_like(ids))[0].mean(axis=0)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def tokenize(self, texts: list[str]) -> tuple[list, list[int]]:
        """Each text's encoding (special tokens, cut at the window, not padded) and its length:
        tokenized once, for ordering and for the model."""
        encodings = self.query_tokenizer.encode_batch(texts)
        return encodings, [len(e.ids) for e in encodings]

    def infer(self, encodings: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit pooled vectors, token vectors and token char offsets for encodings padded into one batch."""
        longest = max(len(e.ids) for e in encodings)
        width = -(-longest // self.pad_multiple) * self.pad_multiple
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        offsets = np.zeros((len(encodings), width, 2), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            ids[row, :length] = encoding.ids
            mask[row, :length] = 1
            offsets[row, :length] = encoding.offsets
        tokens = self.run(ids, mask)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32), tokens, offsets

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit pooled vectors, token vectors and token char offsets for one padded batch."""
        return self.infer(self.tokenize(texts)[0])


def save_recipe(folder: Path, onnx_file: Path, tokenizer_json: str, dimension: int, max_tokens: int,
                pad_token: str, pad_id: int) -> None:
    """Write the recipe once per model version (atomically: a reader sees all of it or none)."""
    if recipe_version(folder) == RECIPE_VERSION:
        return
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        shutil.rmtree(folder, ignore_errors=True)  # one this code cannot read
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
        (staging / RECIPE).write_text(json.dumps({
            "version": RECIPE_VERSION, "onnx": str(onnx_file.resolve()), "dimension": dimension,
            "max_tokens": max_tokens, "pad_token": pad_token, "pad_id": pad_id}))
        os.rename(staging, folder)
    except OSError as exc:  # another process wrote it first, or the cache is read-only: only speed is lost
        log.info("model recipe not written to %s: %s", folder, exc)
        shutil.rmtree(staging, ignore_errors=True)


def recipe_version(folder: Path) -> int | None:
    try:
        return json.loads((folder / RECIPE).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def load_recipe(folder: Path, name: str, threads: int, spin: bool, precision: str = "fp32",
                shared: bool = False) -> OnnxEncoder | None:
    """The encoder a recipe describes, or None when there is none or it no longer loads (then it is
    removed, so the next Embedder writes a fresh one). Raises PrecisionUnavailable when the recipe
    is fine but the precision's runtime cannot run it. shared: see openvino_runner."""
    if not (folder / RECIPE).is_file():
        return None
    try:
        recipe = json.loads((folder / RECIPE).read_text())
        if recipe.get("version") != RECIPE_VERSION:
            raise ValueError(f"recipe version {recipe.get('version')}, this code reads {RECIPE_VERSION}")
        if not Path(recipe["onnx"]).is_file():
            raise ValueError(f"{recipe['onnx']} is gone")
        tokenizer_json = (folder / TOKENIZER).read_text(encoding="utf-8")
        shape = (int(recipe["dimension"]), int(recipe["max_tokens"]), recipe["pad_token"], int(recipe["pad_id"]))
        if precision == "fp32":
            import onnxruntime

            runner = OrtRunner(onnxruntime.InferenceSession(recipe["onnx"], session_options(threads, spin),
                                                            providers=["CPUExecutionProvider"]))
            return OnnxEncoder(name, tokenizer_json, runner, *shape)
    except Exception as exc:  # noqa: BLE001 - any broken recipe means: take the full path
        log.info("model recipe in %s not usable (%s); loading the full model", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return OnnxEncoder(name, tokenizer_json, openvino_runner(Path(recipe["onnx"]), folder, precision, threads, shared),
                       *shape)


def openvino_runner(onnx_file: Path, folder: Path, precision: str, threads: int,
                    shared: bool = False) -> OpenVinoRunner:
    """The ONNX graph compiled by OpenVINO for precision bf16 or int8 (see the module's docstring).

    shared: the model shares the cores with other work, as a server's queries do, so its threads
    are not pinned to cores (a million-passage server: 101-106 against 92-101 requests/s with 4
    clients, alternating; a build, which has the cores to itself, is about 2 % faster pinned)."""
    if precision not in PRECISIONS[1:]:
        raise PrecisionUnavailable(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    try:
        import openvino
    except ImportError as exc:
        raise PrecisionUnavailable(f"precision {precision} runs on OpenVINO, which is not installed; "
                                   "run: pip install openvino nncf, or choose precision fp32") from exc
    core = openvino.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"}
    if shared:
        config["ENABLE_CPU_PINNING"] = "NO"
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    try:
        if precision == "int8":
            model = int8_weights(core, onnx_file, folder)
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = str(DYNAMIC_GROUP)
        else:
            model = core.read_model(str(onnx_file))
        return OpenVinoRunner(core.compile_model(model, "CPU", config))
    except PrecisionUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any OpenVINO failure means the same to the user
        raise PrecisionUnavailable(f"OpenVINO cannot run the model at precision {precision}: {exc}") from exc


def int8_weights(core, onnx_file: Path, folder: Path):
    """The model with int8 weights, made once from onnx_file with NNCF and kept in folder (written
    whole or not at all, like the recipe; a read-only cache only costs the 1-2 s of making it)."""
    target = folder / INT8_FOLDER / "model.xml"
    if target.is_file():
        return core.read_model(str(target))
    try:
        import nncf
        from nncf.common.logging.logger import set_log_level
    except ImportError as exc:
        raise PrecisionUnavailable("precision int8 makes its int8 weights with NNCF, which is not installed; "
                                   "run: pip install nncf, or choose precision fp32 or bf16") from exc
    import openvino

    set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bar
        model = nncf.compress_weights(core.read_model(str(onnx_file)), mode=nncf.CompressWeightsMode.INT8_SYM)
    staging = folder / f"{INT8_FOLDER}.tmp{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        openvino.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        os.rename(staging, target.parent)
    except OSError as exc:  # another process wrote it first, or the cache is read-only
        log.info("int8 weights not kept in %s: %s", folder, exc)
        shutil.rmtree(staging, ignore_errors=True)
    return model
