"""Benchmark build throughput, query latency (in-process and HTTP) and server memory on a BEIR corpus.

    .venv/bin/python bench/serving.py --dataset "$SCIFACT"
    .venv/bin/python bench/serving.py --dataset "$SCIFACT" --engines faiss milvus --queries 60
    .venv/bin/python bench/serving.py --dataset "$SCIFACT" --engines faiss milvus-server --queries 60

With several --engines, each builds its own index of the corpus and answers the same queries, one
after the other in the same run. milvus-server: Milvus over gRPC, as replicas reach a cluster (a
`milvus-lite server` started for the run, its peak memory reported too). For every engine the
in-process hybrid phase also reports the engine's calls and the time spent in them per search
(indexer/index/engine.py ENGINE_CALLS): the rest of a search is this project's code.

Every phase uses queries no earlier phase used, so the query-embedding cache never helps.
Figures are medians/percentiles of one run; baselines (bare model call, /healthz) are measured
in the same run so noise on this shared machine can be read against them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from indexer.eval.beir import read_corpus, read_queries  # noqa: E402
from indexer.index.build import build_from_documents  # noqa: E402
from indexer.model.embedding import choose_precision, light_model_for  # noqa: E402
from indexer.index.engine import ENGINE_CALLS, built_with, open_engine  # noqa: E402
from indexer.model.onnx_encoder import PRECISIONS  # noqa: E402
from indexer.search.searcher import Query, Searcher  # noqa: E402
from tests.conftest import milvus_server, start_server, stop_server  # noqa: E402


def percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2), "n": len(ordered)}


def timed(call, items) -> list[float]:
    samples = []
    for item in items:
        started = time.perf_counter()
        call(item)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def http_phase(url: str, queries: list[str], clients: int, mode: str = "hybrid", path: str = "/search",
               params: dict | None = None) -> dict:
    """Send queries from `clients` threads, each over its own keep-alive connection.

    The client is the standard library's http.client: it shares the 2 cores with the server,
    so it should cost as little as possible.
    """
    host, port = url.removeprefix("http://").split(":")
    shards = [queries[i::clients] for i in range(clients)]

    def run(shard: list[str]) -> tuple[list[float], int]:
        failed = 0
        connection = http.client.HTTPConnection(host, int(port), timeout=30)

        def ask(q: str) -> None:
            nonlocal failed
            connection.request("GET", path + "?" + urllib.parse.urlencode({"q": q, "k": 10, "mode": mode, **(params or {})}))
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failed += 1
        try:
            return timed(ask, shard), failed
        finally:
            connection.close()

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(run, shards))
    wall = time.perf_counter() - started
    samples = [s for shard_samples, _ in results for s in shard_samples]
    return {**percentiles(samples), "clients": clients, "requests_per_s": round(len(samples) / wall, 1),
            "failed": sum(failed for _, failed in results)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--index", type=Path, help="reuse this built index instead of building one")
    parser.add_argument("--queries", type=int, default=200, help="queries per phase")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="model precision (default: the index's own; for a new index the default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--engines", nargs="+", choices=("faiss", "milvus", "milvus-server"), default=None,
                        help="index engines to measure in turn (default: the --index's own, else faiss)")
    args = parser.parse_args()

    queries = list(read_queries(args.dataset).values())
    n = args.queries
    if len(queries) < 5 * n + 40:
        sys.exit(f"need {5 * n + 40} distinct queries, the dataset has {len(queries)}; lower --queries")
    phases = [queries[i * n:(i + 1) * n] for i in range(5)]
    warmup = queries[5 * n:5 * n + 40]
    precision = choose_precision(args.precision, built_with(args.index) if args.index else None)
    embedder = light_model_for(None, precision=precision)
    reports = {}
    for engine in args.engines or [None]:
        reports[engine or "index"] = measure(args, engine, embedder, precision, phases, warmup)
    write_report(reports if args.engines else reports["index"], args.json)


def measure(args, engine: str | None, embedder, precision: str, phases: list[list[str]], warmup: list[str]) -> dict:
    """Build (unless --index) with engine, then time searches in process and over HTTP."""
    if engine != "milvus-server":
        return measure_on(args, engine, {}, embedder, precision, phases, warmup)
    with tempfile.TemporaryDirectory() as data, milvus_server(Path(data)) as (server, uri):
        report = measure_on(args, "milvus", {"uri": uri}, embedder, precision, phases, warmup)
        report["engine"], report["milvus_server_peak_rss_mb"] = "milvus-server", peak_rss_mb(server.pid)
        return report


def per_search(before: dict, after: dict, searches: int) -> dict:
    """The engine's calls and the milliseconds spent in them, per search, between two snapshots."""
    calls = sum(after[k][0] - before.get(k, (0, 0.0))[0] for k in after)
    seconds = sum(after[k][1] - before.get(k, (0, 0.0))[1] for k in after)
    return {"engine_calls": round(calls / searches, 2), "engine_ms": round(1000 * seconds / searches, 2)}


def measure_on(args, engine: str | None, options: dict, embedder, precision: str, phases: list[list[str]],
               warmup: list[str]) -> dict:
    report: dict = {"dataset": str(args.dataset), "precision": precision, "engine": engine}
    workdir = tempfile.TemporaryDirectory()
    index_dir = args.index
    if index_dir is None:
        index_dir = Path(workdir.name) / "index"
        documents = read_corpus(args.dataset)
        summary = build_from_documents(documents, index_dir, embedder,
                                       engine=open_engine(index_dir, embedder.name, embedder.dimension, engine,
                                                          **options))
        texts = summary.passages + summary.sentences
        report["build"] = {"documents": summary.documents, "passages": summary.passages,
                           "sentences": summary.sentences, "seconds": round(summary.seconds, 1),
                           "passages_per_s": round(summary.passages / summary.seconds, 1),
                           "texts_embedded_per_s": round(texts / summary.seconds, 1)}
        print("build", report["build"], flush=True)

    opened = open_engine(index_dir, embedder.name, embedder.dimension, engine, **options)
    opened.prepare()  # as a service opens it (Milvus: every term's document frequency kept)
    searcher = Searcher(opened.reader(), embedder)
    for q in warmup[:20]:
        searcher.search(Query(q))
    before = ENGINE_CALLS.snapshot()
    hybrid = timed(lambda q: searcher.search(Query(q, k=10)), phases[1])
    report["in_process"] = {
        "baseline_embed_query": percentiles(timed(embedder.embed_query, phases[0])),
        "hybrid": {**percentiles(hybrid), **per_search(before, ENGINE_CALLS.snapshot(), len(hybrid))},
        "dense": percentiles(timed(lambda q: searcher.search(Query(q, k=10, mode="dense")), phases[2])),
    }
    print("in-process", report["in_process"], flush=True)
    opened.close()  # Milvus Lite: the server process opens the index next

    process, url = start_server(index_dir)
    try:
        http_phase(url, warmup[20:], clients=1)
        report["http"] = {
            "baseline_healthz": http_phase(url, ["-"] * 200, clients=1, path="/healthz"),
            "hybrid_1_client": http_phase(url, phases[0] + phases[1], clients=1),
            "hybrid_4_clients": http_phase(url, phases[2] + phases[3] + phases[4], clients=4),
        }
        report["server_peak_rss_mb"] = peak_rss_mb(process.pid)
    finally:
        stop_server(process)
    print("http", report["http"], "peak rss MB", report["server_peak_rss_mb"], flush=True)
    workdir.cleanup()
    return report


if __name__ == "__main__":
    main()
