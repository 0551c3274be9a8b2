"""Approximate index choice: IVF with 8-bit codes (what segments use) against HNSW, on vectors of the
real model's distribution.

    .venv/bin/python bench/ann.py --dataset "$SCIFACT" --index DIR --sizes 100000 1000000

DIR is a SciFact index built with the real model (`semsearch eval ... --index DIR` makes one).
Its passage vectors, each copied with small Gaussian noise (sigma 0.02 a coordinate: cosine
about 0.94 to the original) until there are N, stand in for a corpus of N passages; the queries
are SciFact's own, embedded by the real model. For each index: build seconds, bytes in RAM,
single-query p50 (one thread) and recall@10 against exact search.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import emit  # noqa: E402
from indexer.engines.faiss import store  # noqa: E402
from indexer.eval.beir import read_queries  # noqa: E402
from indexer.engines.faiss.dense import DenseParams, DenseSegment, build_ann, exact  # noqa: E402
from indexer.model.embedding import light_model_for  # noqa: E402
from indexer.search.searcher import single_threaded_numpy  # noqa: E402


def noisy_copies(base: np.ndarray, n: int, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for first in range(0, n, 100_000):
        rows = rng.integers(0, len(base), min(100_000, n - first))
        chunk = base[rows] + rng.normal(0, sigma, (len(rows), base.shape[1])).astype(np.float32)
        out[first:first + len(rows)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def timed_search(search, queries: np.ndarray) -> tuple[list[list[int]], float]:
    found, samples = [], []
    for q in queries:
        started = time.perf_counter()
        found.append(search(q))
        samples.append((time.perf_counter() - started) * 1000)
    return found, round(statistics.median(samples), 3)


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return round(float(np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth)])), 4)


def measure(vectors: np.ndarray, queries: np.ndarray, workdir: Path, hnsw: bool = True) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)  # as the service searches: one thread per query
    single_threaded_numpy()
    truth = [exact(vectors, q, 10)[0].tolist() for q in queries]
    results = {}

    folder = workdir / "ivf"
    folder.mkdir(exist_ok=True)
    np.save(folder / "vectors.npy", vectors)
    faiss.omp_set_num_threads(2)  # builds use both cores
    started = time.perf_counter()
    info = build_ann(vectors, folder / "ann.faiss", DenseParams())
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    segment = DenseSegment(folder, info, DenseParams())
    found, p50 = timed_search(lambda q: segment.search(q, 10)[0].tolist(), queries)
    results["ivf_sq8_rescored"] = {"build_s": round(build_s, 1), "ram_mb": round((folder / "ann.faiss").stat().st_size / 2**20, 1),
                                   "nlist": info["nlist"], "nprobe": info["nprobe"], "p50_ms": p50,
                                   "recall_at_10": recall(found, truth)}
    print(results, flush=True)

    for name, factory in () if not hnsw else (("hnsw32_flat", lambda d: faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)),
                          ("hnsw32_sq8", lambda d: faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 32,
                                                                     faiss.METRIC_INNER_PRODUCT))):
        index = factory(vectors.shape[1])
        index.hnsw.efConstruction = 40
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        if not index.is_trained:
            index.train(vectors[:100_000])
        index.add(vectors)
        build_s = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        path = workdir / f"{name}.faiss"
        faiss.write_index(index, str(path))
        for ef in (64, 128, 256):
            index.hnsw.efSearch = ef
            found, p50 = timed_search(lambda q: index.search(q[None, :], 10)[1][0].tolist(), queries)
            results[f"{name}_ef{ef}"] = {"build_s": round(build_s, 1), "ram_mb": round(path.stat().st_size / 2**20, 1),
                                         "p50_ms": p50, "recall_at_10": recall(found, truth)}
            print(name, ef, results[f"{name}_ef{ef}"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="a SciFact index built with the real model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sigma", type=float, default=0.02)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-hnsw", action="store_true", help="measure only the IVF index segments use")
    args = parser.parse_args()

    model = light_model_for(None)
    loaded = store.load(args.index, model.name, model.dimension)
    base = np.vstack([np.asarray(v.segment.dense.vectors) for v in loaded.views]).astype(np.float32)
    queries = np.vstack([model.embed_query(q) for q in list(read_queries(args.dataset).values())[:300]])
    report = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="semsearch-ann-") as workdir:
            report[size] = measure(noisy_copies(base, size, args.sigma), queries, Path(workdir), not args.no_hnsw)
    emit(report, args.json)


if __name__ == "__main__":
    main()
