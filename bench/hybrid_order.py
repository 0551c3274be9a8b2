"""In-process hybrid search time by how hybrid results are ordered: by relevance with its late
interaction stage (the default), by relevance without it, and convex.

    .venv/bin/semsearch eval "$SCIFACT" --index scifact-index     # builds the index once
    .venv/bin/python bench/hybrid_order.py --index scifact-index --dataset "$SCIFACT"
    .venv/bin/python bench/hybrid_order.py --index news-index --dataset tests/questions/news/test.jsonl

The same queries (SciFact's first 300, or a question file's; their vectors cached first, so only
the search is timed) through three Searchers on one index, three rounds each, interleaved;
medians and 95th percentiles in ms.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
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
    from indexer.eval.questions import read_questions
    from indexer.search.relevance import NO_LATE, relevance_for
    from indexer.search.searcher import FusionParams, Query, Searcher

    model = model_for_index(None, None, args.index)
    reader = open_engine(args.index, model.name, model.dimension).reader()
    if args.dataset.suffix == ".jsonl":
        queries = [q.text for q in read_questions(args.dataset)]
    else:
        queries = list(read_queries(args.dataset).values())[:300]
    params = relevance_for(model.name)[0]
    searchers = {"convex": Searcher(reader, model, FusionParams(method="convex")),
                 "relevance, late interaction": Searcher(reader, model, FusionParams(method="relevance"), params),
                 "relevance, no late stage": Searcher(reader, model, FusionParams(method="relevance"),
                                                      replace(params, **NO_LATE))}
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
    emit({"cpu": read_cpu().describe(), "passages": reader.info.passages, "queries": len(queries),
          "ms": {method: {"p50": round(statistics.median(v), 3), "p95": round(sorted(v)[int(len(v) * 0.95)], 3)}
                 for method, v in times.items()}}, args.json)


if __name__ == "__main__":
    main()
