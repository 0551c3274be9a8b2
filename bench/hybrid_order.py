"""In-process hybrid search time by how hybrid results are ordered (relevance against convex).

    .venv/bin/semsearch eval "$SCIFACT" --index scifact-index     # builds the index once
    .venv/bin/python bench/hybrid_order.py --index scifact-index --dataset "$SCIFACT"

The same 300 SciFact queries (their vectors cached first, so only the search is timed) through two
Searchers on one index, three rounds each, interleaved; medians and 95th percentiles in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "eval" / "scifact")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from indexer.eval.beir import read_queries
    from indexer.cli.commands import model_for_index
    from indexer.model.cpu import read_cpu
    from indexer.index.engine import open_engine
    from indexer.search.searcher import FusionParams, Query, Searcher

    model = model_for_index(None, None, args.index)
    reader = open_engine(args.index, model.name, model.dimension).reader()
    queries = list(read_queries(args.dataset).values())[:300]
    searchers = {method: Searcher(reader, model, FusionParams(method=method)) for method in ("convex", "relevance")}
    for query in queries:  # the query vectors cached: only the search itself is timed
        for searcher in searchers.values():
            searcher.search(Query(query, k=10))
    times: dict[str, list[float]] = {method: [] for method in searchers}
    for _ in range(3):
        for method, searcher in searchers.items():
            for query in queries:
                started = time.perf_counter()
                searcher.search(Query(query, k=10))
                times[method].append((time.perf_counter() - started) * 1000)
    emit({"cpu": read_cpu().describe(), "passages": reader.counts()["passages"],
          "ms": {method: {"p50": round(statistics.median(v), 3), "p95": round(sorted(v)[int(len(v) * 0.95)], 3)}
                 for method, v in times.items()}}, args.json)


if __name__ == "__main__":
    main()
