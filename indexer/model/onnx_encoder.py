"""The model on ONNX Runtime or OpenVINO and tokenizers alone (no torch, no sentence-transformers):
queries, passages with sentence vectors, and token spans for chunking.

Loading it takes about 0.5 s and 450 MB with a SciFact index, against 4 s and 850 MB for the
sentence-transformers pipeline, most of which is importing torch. The Embedder writes a recipe
(the ONNX file, the exact tokenizer, window, dimension, padding token) once it has checked the
model is transformer + mean pooling; without a usable recipe, callers load the Embedder, which
writes one for next time.

Precisions (each its own model identity, so an index and its embedding cache never mix them):
- `fp32`: the export's own arithmetic, the sentence-transformers pipeline's vectors: on ONNX Runtime,
  or on OpenVINO (f32) on the CPU classes where that is faster (indexer/model/cpu.py: FP32_RUNTIME).
- `bf16`: OpenVINO on the same file, bf16 arithmetic where the CPU has it (AVX-512 BF16, AMX).
- `int8`: OpenVINO with int8 weights (per output channel, symmetric; NNCF, made once and cached
  beside the recipe) and activations quantized to int8 per token as each batch runs, so the
  matrix products run on int8 units (VNNI, AMX) with no calibration text to choose.
- `int8-7bit`: ONNX Runtime, dynamic int8 with 7-bit weights (per output channel), so CPUs
  without VNNI (AVX2, AVX-512 without VNNI), whose int8 products sum pairs into 16 bits
  (VPMADDUBSW), cannot saturate; each layer's feed-forward output projection stays fp32 (its
  inputs, after GELU, have the widest range: quantizing it too cost cosine 0.9935 against 0.9968).
  Made once from the export, no calibration text. Opt-in: 1.35x fp32 on AVX2, but SciFact dense
  nDCG@10 0.6514 against 0.6627, so no CPU class chooses it (indexer/model/cpu.py).
- `int8-static` (the VNNI machines' choice for a new index): passages with int8 weights and activations at
  scales fixed once on the news text in calibration.txt (NNCF), so no per-batch quantizing, about
  15 % faster than `int8`; queries as `int8`. Its model identity carries a digest of that text.
Measured on SciFact in docs/benchmarks.md (speed, cosine to fp32, nDCG@10).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from indexer.model.pieces import query_pieces
from indexer.model.pooling import PassageEmbedding

log = logging.getLogger(__name__)
RECIPE = "recipe.json"
TOKENIZER = "tokenizer.json"
RECIPE_VERSION = 2  # 2: the padding token, for batches
PRECISIONS = ("fp32", "bf16", "int8", "int8-static", "int8-7bit")
INT8_7BIT_FILE = "ort-int8-7bit.onnx"  # inside the recipe folder
INT8_FOLDER = "openvino-int8"  # inside the recipe folder: the int8-weight copy of the model
STATIC_FOLDER = "openvino-int8-static"  # and the statically quantized one
CALIBRATION = Path(__file__).with_name("calibration.txt")
STATIC_SETTINGS = "nncf.quantize: transformer, SmoothQuant; queries int8"  # in int8-static's identity
# Precisions whose queries run at another one: fixed activation scales suit passages but not short
# queries (cosine to fp32 as low as 0.976 for a six-word question, docs/benchmarks.md).
QUERY_PRECISION = {"int8-static": "int8"}
# Activations are quantized in groups of this many values along each token's vector (384: one
# scale per token and matrix product); measured against 64 in docs/benchmarks.md.
DYNAMIC_GROUP = 384
PAD_MULTIPLE = 16
TOKENIZE_IN_TWO = 256  # texts from which OnnxEncoder.tokenize uses two threads


def variant(precision: str) -> str:
    """The name a precision's vectors go by (after "@" in the model name, so also in the manifest
    and the embedding cache's key): the precision itself, and for int8-static a digest of its
    calibration text and settings, so changing either is a new model identity, never a mix."""
    return f"{precision}-{static_digest()}" if precision == "int8-static" else precision


@functools.cache
def static_digest() -> str:
    return hashlib.sha256(CALIBRATION.read_bytes() + STATIC_SETTINGS.encode()).hexdigest()[:8]


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
    """Token vectors from an OpenVINO model compiled by compile(); one infer request per thread (a
    request runs one call at a time, the compiled model serves any number). lazy: compiled on the
    first call, so a server whose queries run on another runner pays for this one (about 90 MB)
    only once it embeds passages."""

    def __init__(self, compile, input_names: list[str], lazy: bool = False) -> None:
        self.input_names = input_names
        self.lock = threading.Lock()
        # Once compiled, compile (and the uncompiled model it holds) is let go.
        self.compile, self.compiled = (compile, None) if lazy else (None, compile())
        self.local = threading.local()

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self.local, "request", None)
        if request is None:
            with self.lock:
                if self.compiled is None:
                    self.compiled, self.compile = self.compile(), None
            request = self.local.request = self.compiled.create_infer_request()
        request.infer(feeds)
        return request.get_output_tensor(0).data.copy()  # the request reuses its output buffer


class OnnxEncoder(PassageEmbedding):
    """The model's mean-pooled, unit-length vectors straight from a runner (OrtRunner or
    OpenVinoRunner) of its ONNX graph; query_runner, when given, embeds the queries instead."""

    def __init__(self, name: str, tokenizer_json: str, runner, dimension: int, max_tokens: int,
                 pad_token: str, pad_id: int, query_runner=None) -> None:
        from tokenizers import Tokenizer

        self.name, self.dimension, self.max_tokens = name, dimension, max_tokens
        self.runner = runner
        self.query_runner = query_runner
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

    def run(self, ids: np.ndarray, mask: np.ndarray, runner=None) -> np.ndarray:
        """Token vectors (batch, tokens, dimension) for token ids and attention mask (batch, tokens)."""
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return (runner or self.runner)({name: arrays[name] for name in self.inputs})

    def embed_query(self, text: str) -> np.ndarray:
        """One query: a single unpadded input, so the plain mean of its token vectors is the
        model's mean pooling (and no per-call tensor conversions, about 0.5 ms)."""
        return self.embed_query_pieces(text)[0]

    def embed_query_pieces(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The query's vector, and its word pieces (no special tokens) for late interaction with
        each one's (start, end) in the text, from one run."""
        encoding = self.query_tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        tokens = self.run(ids, np.ones_like(ids), self.query_runner)[0]
        vector = tokens.mean(axis=0)
        spans = np.array(encoding.offsets[1:-1], dtype=np.int64).reshape(-1, 2)
        return (vector / np.linalg.norm(vector)).astype(np.float32), query_pieces(tokens[1:-1]), spans

    def tokenize(self, texts: list[str]) -> tuple[list, list[int]]:
        """Each text's encoding (special tokens, cut at the window, not padded) and its length:
        tokenized once, for ordering and for the model. Many texts are tokenized in two halves at
        once (the tokenizer releases the GIL; the model has not started yet, so a core is free):
        SciFact's inputs in 1.4 s instead of 2.7 s."""
        if len(texts) < TOKENIZE_IN_TWO:
            encodings = self.query_tokenizer.encode_batch(texts)
        else:
            half = len(texts) // 2
            with ThreadPoolExecutor(2, thread_name_prefix="tokenizing") as pool:
                first, second = pool.map(self.query_tokenizer.encode_batch, (texts[:half], texts[half:]))
            encodings = first + second
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
        if precision == "fp32" and fp32_runtime() == "onnxruntime":
            return OnnxEncoder(name, tokenizer_json, ort_runner(Path(recipe["onnx"]), threads, spin), *shape)
    except Exception as exc:  # noqa: BLE001 - any broken recipe means: take the full path
        log.info("model recipe in %s not usable (%s); loading the full model", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    onnx_file = Path(recipe["onnx"])
    if precision == "int8-7bit":
        return OnnxEncoder(name, tokenizer_json, ort_runner(int8_7bit(onnx_file, folder), threads, spin), *shape)
    if precision == "fp32":
        # Batches on OpenVINO, set up on the first batch (a search never loads it); a single query
        # is faster on ONNX Runtime (3.5 against 5.2 ms).
        queries = ort_runner(onnx_file, threads, spin)
        passages = OpenVinoRunner(lambda: openvino_runner(onnx_file, folder, precision, threads, shared).compiled,
                                  queries.input_names, lazy=True)
        return OnnxEncoder(name, tokenizer_json, passages, *shape, query_runner=queries)
    queries = QUERY_PRECISION.get(precision)
    return OnnxEncoder(name, tokenizer_json, openvino_runner(onnx_file, folder, precision, threads, shared, bool(queries)),
                       *shape, query_runner=queries and openvino_runner(onnx_file, folder, queries, threads, shared))


def fp32_runtime() -> str:
    """Where fp32 runs on this CPU (indexer/model/cpu.py): the same vectors either way (cosine 1.00000)."""
    from indexer.model.cpu import FP32_RUNTIME, UnknownClass, read_cpu

    try:
        return FP32_RUNTIME.get(read_cpu().cpu_class, "onnxruntime")
    except UnknownClass as exc:
        raise PrecisionUnavailable(str(exc)) from exc


def ort_runner(onnx_file: Path, threads: int, spin: bool) -> OrtRunner:
    import onnxruntime

    return OrtRunner(onnxruntime.InferenceSession(str(onnx_file), session_options(threads, spin),
                                                  providers=["CPUExecutionProvider"]))


def int8_7bit(onnx_file: Path, folder: Path) -> Path:
    """The int8-7bit copy of the export (see the module's docstring), made once into folder
    (written whole or not at all; with a read-only cache, made into a temporary folder each time)."""
    target = folder / INT8_7BIT_FILE
    if target.is_file():
        return target
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise PrecisionUnavailable("precision int8-7bit needs onnxruntime's quantization tools and onnx; "
                                   "run: pip install onnx, or choose precision fp32") from exc
    kept_fp32 = [node.name for node in onnx.load(str(onnx_file), load_external_data=False).graph.node
                 if node.op_type == "MatMul" and node.name.endswith("/output/dense/MatMul")
                 and "/attention/" not in node.name]
    staging = target.with_name(f"{target.stem}.tmp{os.getpid()}.onnx")
    if not os.access(folder, os.W_OK):
        import tempfile

        staging = target = Path(tempfile.mkdtemp(prefix="semsearch-int8-7bit-")) / INT8_7BIT_FILE
    log.info("making %s once (seconds); later runs read it", target)
    logging.disable(logging.WARNING)  # its advice to pre-process the graph (measured: no gain here)
    try:
        quantize_dynamic(str(onnx_file), str(staging), per_channel=True, reduce_range=True,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], nodes_to_exclude=kept_fp32)
    finally:
        logging.disable(logging.NOTSET)
    os.replace(staging, target)
    return target


def openvino_runner(onnx_file: Path, folder: Path, precision: str, threads: int,
                    shared: bool = False, lazy: bool = False) -> OpenVinoRunner:
    """The ONNX graph compiled by OpenVINO for precision fp32, bf16, int8 or int8-static (see the module's
    docstring); lazy: compiled on first use (the model itself is made, or read, now).

    shared: the model shares the cores with other work, as a server's queries do, so its threads
    are not pinned to cores (a million-passage server: 101-106 against 92-101 requests/s with 4
    clients, alternating; a build, which has the cores to itself, is about 2 % faster pinned)."""
    if precision not in PRECISIONS or precision == "int8-7bit":
        raise PrecisionUnavailable(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    try:
        import openvino
    except ImportError as exc:
        raise PrecisionUnavailable(f"precision {precision} runs on OpenVINO, which is not installed; "
                                   "run: pip install openvino nncf, or choose precision fp32") from exc
    core = openvino.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16"}
    if shared:
        config["ENABLE_CPU_PINNING"] = "NO"
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    try:
        if precision == "int8":
            model = int8_weights(core, onnx_file, folder)
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = str(DYNAMIC_GROUP)
        elif precision == "int8-static":
            model = int8_static(core, onnx_file, folder)
        else:
            model = core.read_model(str(onnx_file))

        def compile_model():
            try:
                return core.compile_model(model, "CPU", config)
            except Exception as exc:  # noqa: BLE001 - any OpenVINO failure means the same to the user
                raise PrecisionUnavailable(f"OpenVINO cannot run the model at precision {precision}: {exc}") from exc
        return OpenVinoRunner(compile_model, [i.get_any_name() for i in model.inputs], lazy)
    except PrecisionUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - as above, while reading or making the model
        raise PrecisionUnavailable(f"OpenVINO cannot run the model at precision {precision}: {exc}") from exc


def int8_weights(core, onnx_file: Path, folder: Path):
    """The model with int8 weights, made once from onnx_file with NNCF and kept in folder."""
    def make(nncf):
        return nncf.compress_weights(core.read_model(str(onnx_file)), mode=nncf.CompressWeightsMode.INT8_SYM)
    return kept_model(core, folder / INT8_FOLDER, make)


def int8_static(core, onnx_file: Path, folder: Path):
    """The model with int8 weights and int8 activations at fixed scales: NNCF's post-training
    quantization in its transformer mode (SmoothQuant included), calibrated once on the news text
    in calibration.txt, never on what is indexed, so every index gets the same vectors for the same
    text. Made once and kept in folder, named by its digest (see variant)."""
    def make(nncf):
        model = core.read_model(str(onnx_file))
        samples = calibration_batches(folder, [i.get_any_name() for i in model.inputs])
        return nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                             subset_size=len(samples))
    return kept_model(core, folder / f"{STATIC_FOLDER}-{static_digest()}", make)


def calibration_batches(folder: Path, input_names: list[str]) -> list[dict]:
    """calibration.txt as model inputs: each block (blocks are separated by blank lines) alone and
    joined with the next one, so short and long inputs up to the model's window are both seen."""
    from tokenizers import Tokenizer

    recipe = json.loads((folder / RECIPE).read_text())
    tokenizer = Tokenizer.from_str((folder / TOKENIZER).read_text(encoding="utf-8"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(recipe["max_tokens"]))
    blocks = [b.strip() for b in CALIBRATION.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    texts = blocks + [a + "\n" + b for a, b in zip(blocks, blocks[1:])]
    samples = []
    for encoding in tokenizer.encode_batch(texts):
        ids = np.array([encoding.ids], dtype=np.int64)
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        samples.append({name: arrays[name] for name in input_names})
    return samples


def kept_model(core, target: Path, make):
    """The OpenVINO model in folder target, made by make(nncf) once and kept there (written whole
    or not at all, like the recipe; a read-only cache only costs the seconds of making it)."""
    if (target / "model.xml").is_file():
        return core.read_model(str(target / "model.xml"))
    try:
        import nncf
        from nncf.common.logging.logger import set_log_level
    except ImportError as exc:
        raise PrecisionUnavailable("precisions int8 and int8-static are made with NNCF, which is not installed; "
                                   "run: pip install nncf, or choose precision fp32 or bf16") from exc
    import openvino

    log.info("making %s once (NNCF, seconds); later runs read it", target)
    set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        model = make(nncf)
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        openvino.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        os.rename(staging, target)
    except OSError as exc:  # another process wrote it first, or the cache is read-only
        log.info("%s not kept: %s", target, exc)
        shutil.rmtree(staging, ignore_errors=True)
    return model
