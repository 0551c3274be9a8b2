"""Passage embedding on a Ray cluster, for `semsearch index FOLDER --ray [ADDRESS]`.

Reading, chunking, the embedding cache and the engine stay on the driver, exactly as in a local
build (indexer/index/build.py); only the passages the cache and the index lack travel: a Ray Data
dataset of (cache key, model input, sentence spans), mapped in batches by a pool of actors. Each
actor loads the index's own model and precision once, on ONNX Runtime or OpenVINO (no torch), from
the very files the driver uses (the model's recipe folder and ONNX export, put in Ray's object store
once and written to each node's temporary folder), so every node computes the vectors the driver
would. Vectors come back with their keys as they are made, go into the cache at once (a driver
killed mid-job loses none of them) and through the engine as a local build's do.

Ray Data restarts an actor whose process dies and retries its batch (ray.data's actor pools run with
max_restarts=-1 and max_task_retries=-1). Nothing of Ray is imported unless --ray is given.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from indexer.model.pieces import PIECE_DIMENSION
from indexer.errors import ModelError
from indexer.settings import current

log = logging.getLogger(__name__)
ROWS_PER_CALL = 128  # passages an actor embeds per call: the unit of retry, caching and progress
RECIPE = "recipe.json"
ONNX_FILE = "model.onnx"  # the export's name inside a shipped bundle
# Code that decides a passage's vector: the driver and every actor must run the same, or the index
# would mix vectors of two versions.
VECTOR_CODE = ("pooling.py", "onnx_encoder.py", "calibration.txt")


@functools.cache
def vector_code_digest() -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in VECTOR_CODE)).hexdigest()[:16]


@contextlib.contextmanager
def silent_stderr() -> Iterator[None]:
    """Whatever is written to this process's stderr file (C++ included) goes nowhere meanwhile;
    failures still arrive as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as nowhere:
            os.dup2(nowhere.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class RayUnavailable(ModelError):
    """Ray is not installed, or the cluster cannot be reached or cannot run the model."""


def check_reachable(address: str | None, seconds: float = 5.0) -> None:
    """Raise ConnectionError at once when address (HOST:PORT) takes no connection: Ray itself
    retries for minutes before it gives up."""
    import socket

    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # a new local Ray, "auto", or a ray:// client address: Ray's own checks
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from exc


def model_bundle(model, model_path: str | None) -> dict | None:
    """What an actor needs to load model: the files of its recipe folder and its ONNX export, with a
    digest naming them (None for the stand-in encoder, which needs no files)."""
    from indexer.model.embedding import packaged_model_path, recipe_dir
    from indexer.model.hashing_encoder import HashingEncoder

    if isinstance(model, HashingEncoder):
        return None
    folder = recipe_dir(model_path or packaged_model_path())
    try:
        recipe = json.loads((folder / RECIPE).read_text())
    except (OSError, ValueError) as exc:
        raise RayUnavailable(f"embedding on Ray needs the model's ONNX recipe in {folder}, which is missing: {exc}",
                             "build once without --ray (it writes the recipe), or use a transformer model "
                             "with mean pooling") from exc
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and ".tmp" not in str(p.relative_to(folder))}
    files[ONNX_FILE] = Path(recipe["onnx"]).read_bytes()
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\x00" + hashlib.sha256(data).digest())
    return {"digest": digest.hexdigest()[:16], "files": files}


def unpack_bundle(bundle: dict) -> Path:
    """The bundle's files in this node's temporary folder (written once per node, whole or not at
    all), with the recipe pointing at its own copy of the export."""
    target = Path(tempfile.gettempdir()) / "semsearch-ray" / bundle["digest"]
    if (target / RECIPE).is_file():
        return target
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for name, data in bundle["files"].items():
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    recipe = json.loads((staging / RECIPE).read_text())
    recipe["onnx"] = str(target / ONNX_FILE)
    (staging / RECIPE).write_text(json.dumps(recipe))
    try:
        os.rename(staging, target)
    except OSError:  # another actor on this node unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


class PassageActor:
    """One actor of the pool: the model loaded once, then batches of passages embedded on its own
    cores (threads: the CPUs Ray gave it)."""

    def __init__(self, bundle: list, name: str, precision: str, threads: int, code: str) -> None:
        import ray

        from indexer.model.hashing_encoder import HashingEncoder
        from indexer.model.onnx_encoder import load_recipe

        if code != vector_code_digest():
            raise RuntimeError(f"this Ray node runs another semsearch than the driver (vector code {vector_code_digest()}, "
                               f"driver {code}): install the driver's version on every node")
        files = ray.get(bundle[0])
        if files is None:
            self.model = HashingEncoder()
        else:
            # shared: unpinned threads. OpenVINO pins a model's threads to cores, so two one-thread
            # actors on a node would share one core (measured: each at 50 %, the other core idle).
            self.model = load_recipe(unpack_bundle(files), name, threads, False, precision, shared=True)
            if self.model is None:
                raise RuntimeError(f"the model bundle {files['digest']} does not load on this node")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spans = [json.loads(s) for s in batch["spans"]]
        vectors, sentences, pieces = self.model.embed_passages(list(batch["text"]), spans, False, pieces=True)
        parts = np.split(sentences.astype(np.float32), np.cumsum([len(s) for s in spans])[:-1])
        return {"key": batch["key"], "vector": vectors.astype(np.float32),
                "sentences": np.array([p.tobytes() for p in parts], dtype=object),
                "pieces": np.array([np.asarray(p, np.int8).tobytes() for p in pieces], dtype=object)}


class RayEmbedding:
    """A pool of actors on the Ray cluster at address (None or "": RAY_ADDRESS, else a local Ray on
    this machine's cores), embedding passages for model. actors: pool size (default: one per CPU
    of the cluster, each on one thread). rows_per_call: passages per actor call."""

    def __init__(self, model, model_path: str | None, precision: str, address: str | None = None,
                 actors: int | None = None, rows_per_call: int = ROWS_PER_CALL) -> None:
        # Ray's core logs to stderr from C++: an error-level line for every actor Ray Data starts
        # (ray-project/ray#57733: "has constructor arguments in the object store", about Ray Data's
        # own arguments; harmless) unless the level is fatal, and a line saying so once it is set,
        # which silent_stderr() keeps off the user's screen.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise RayUnavailable("--ray needs Ray, which is not installed", "pip install 'semsearch[ray]'") from exc
        self.ray = ray
        self.model = model
        self.precision = precision
        self.rows_per_call = rows_per_call
        address = address or current().ray_address
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                check_reachable(address)
                # Errors only: its notices (token authentication on, a deprecated argument) are not the user's to act on.
                with silent_stderr():  # "local": a new Ray, never one a stale `ray start` left behind
                    ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR,
                             log_to_driver=False, configure_logging=True)
            except Exception as exc:  # noqa: BLE001 - connection refused, unknown address, version mismatch ...
                raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'a new local Ray'}: {exc}",
                                     "ray start --head  # then pass the address it prints: --ray HOST:PORT; a cluster "
                                     "with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its "
                                     "token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from exc
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the build shows its own
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled", and so on
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.actors = actors or max(1, cpus)
        if self.actors > cpus:
            log.warning("%d actors asked for, but the cluster has %d CPUs: the others start only when nodes "
                        "join (each actor takes one CPU)", self.actors, cpus)
        self.bundle = ray.put(model_bundle(model, model_path))
        where = address or "a local Ray"
        log.info("embedding on %s: %d actors, %d CPUs in the cluster", where, self.actors, cpus)

    def embed(self, keys: Sequence[str], texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]
              ) -> Iterator[tuple[list[str], np.ndarray, list[np.ndarray], list[np.ndarray]]]:
        """(keys, vectors, sentence vectors of each, word piece codes of each) in batches, in the
        order the actors finish them."""
        if not keys:
            return
        ray = self.ray
        order = sorted(range(len(keys)), key=lambda i: -len(texts[i]))  # similar lengths pad less
        rows = [{"key": keys[i], "text": texts[i], "spans": json.dumps([list(s) for s in spans[i]])} for i in order]
        # One block per actor call: a block goes to one actor whole, so fewer blocks would leave actors idle.
        blocks = -(-len(rows) // self.rows_per_call)
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            PassageActor, batch_size=self.rows_per_call, batch_format="numpy", num_cpus=1,
            # no more actors than blocks: the others would load the model to sit idle (and Ray warns)
            compute=ray.data.ActorPoolStrategy(size=min(self.actors, blocks)),
            fn_constructor_kwargs={"bundle": [self.bundle], "name": self.model.name, "precision": self.precision,
                                   "threads": 1, "code": vector_code_digest()})
        dimension = self.model.dimension
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                yield ([str(k) for k in batch["key"]], np.asarray(batch["vector"], np.float32).reshape(-1, dimension),
                       [np.frombuffer(s, np.float32).reshape(-1, dimension) for s in batch["sentences"]],
                       [np.frombuffer(p, np.int8).reshape(-1, PIECE_DIMENSION) for p in batch["pieces"]])
        except Exception as exc:  # noqa: BLE001 - an actor that cannot start, a lost cluster ...
            raise RayUnavailable(f"embedding on Ray failed: {exc}", "check the cluster (`ray status`), "
                                 "or index without --ray") from exc

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
