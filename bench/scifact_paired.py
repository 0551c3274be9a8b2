"""SciFact test, query by query: the hybrid order against the order before late interaction, with a paired bootstrap.

    .venv/bin/python bench/scifact_paired.py --scifact "$SCIFACT" --index scifact-index --precision int8-static

The index is built into --index, or brought up to date there, as `semsearch eval` builds it. Every
judged query of SciFact test is ranked twice by documents, as `semsearch eval` ranks them: by the
product's hybrid order (relevance, late interaction on the first 30) and by the order the late
stage replaced (the two lists' min-max scaled scores summed 0.5/0.5, no late stage, which gave
the 0.7315 the late stage is held to). For each query the difference in nDCG@10; the mean
difference with a 95 % interval from 10,000 resamples of the queries (paired bootstrap), and how
many queries each order served better. An interval that straddles 0 says the two orders cannot
be told apart on these 300 queries.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.engines.faiss import store  # noqa: E402
from indexer.eval.beir import read_corpus, read_qrels, read_queries  # noqa: E402
from indexer.eval.evaluation import rank_documents  # noqa: E402
from indexer.index.build import build_from_documents  # noqa: E402
from indexer.model.cpu import read_cpu  # noqa: E402
from indexer.model.embedding import light_model_for  # noqa: E402
from indexer.model.onnx_encoder import PRECISIONS  # noqa: E402
from indexer.search.searcher import FusionParams, Searcher  # noqa: E402

ORDERS = {"hybrid (relevance, late interaction)": FusionParams(),
          "before (convex 0.5/0.5, no late stage)": FusionParams(method="convex", late_depth=0)}
RESAMPLES = 10_000


def per_query(qrels: dict, run: dict) -> np.ndarray:
    """nDCG@10 of each judged query, in qrels' order (a query that found nothing scores 0)."""
    from ranx import Qrels, Run, evaluate

    run = {query_id: run.get(query_id) or {"__none__": 0.0} for query_id in qrels}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-cast chatter
        return np.asarray(evaluate(Qrels(qrels), Run(run), "ndcg@10", return_mean=False), float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="SciFact's index (built there when absent)")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8-static")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = light_model_for(None, precision=args.precision)
    build_from_documents(read_corpus(args.scifact), args.index, model, False, str(args.scifact))
    index = store.load(args.index, model.name, model.dimension)
    qrels = read_qrels(args.scifact, "test")
    texts = read_queries(args.scifact)
    qrels = {query_id: judged for query_id, judged in qrels.items() if query_id in texts}
    queries = {query_id: texts[query_id] for query_id in qrels}
    scores = {name: per_query(qrels, rank_documents(Searcher(index, model, fusion), queries, "hybrid"))
              for name, fusion in ORDERS.items()}
    (new, new_scores), (old, old_scores) = scores.items()
    difference = new_scores - old_scores
    draws = np.random.default_rng(0).integers(0, len(difference), (RESAMPLES, len(difference)))
    low, high = np.percentile(difference[draws].mean(axis=1), [2.5, 97.5])
    emit({"cpu": read_cpu().describe(), "model": model.name, "queries": len(difference),
          "ndcg@10": {name: round(float(values.mean()), 4) for name, values in scores.items()},
          "difference": round(float(difference.mean()), 4), "interval_95": [round(float(low), 4), round(float(high), 4)],
          "better": {new: int((difference > 0).sum()), old: int((difference < 0).sum())},
          "same": int((difference == 0).sum())}, args.json)


if __name__ == "__main__":
    main()
