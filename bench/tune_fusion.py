"""Sweep hybrid fusion settings on a BEIR split (tune on train, report on test).

    .venv/bin/python bench/tune_fusion.py --dataset "$SCIFACT" --index scifact-index --split train

The index is the one `semsearch eval DATASET --index DIR` builds and keeps. The eval ranks 100
documents per query (lists read 400 deep); `--page-depths` also scores the first page of 10 as
the product serves it, at each fusion depth given (min-max scaling depends on the depth).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.engines.faiss import store  # noqa: E402
from indexer.eval.beir import read_qrels, read_queries  # noqa: E402
from indexer.model.embedding import Embedder  # noqa: E402
from indexer.eval.evaluation import rank_documents, score  # noqa: E402
from indexer.search.searcher import FusionParams, Searcher  # noqa: E402

GRID = [FusionParams(method="rrf", rrf_k=k, dense_weight=1.0, keyword_weight=1.0) for k in (5, 20, 60)] + \
    [FusionParams(method="rrf", rrf_k=60, dense_weight=1.0, keyword_weight=w) for w in (0.6, 0.8, 1.25)] + \
    [FusionParams(method="convex", dense_weight=a, keyword_weight=round(1 - a, 2)) for a in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--page-depths", type=int, nargs="*", default=[], help="fusion depths to score a k=10 page at")
    args = parser.parse_args()
    qrels = read_qrels(args.dataset, args.split)
    queries = {q: t for q, t in read_queries(args.dataset).items() if q in qrels}
    embedder = Embedder()
    searcher = Searcher(store.load(args.index, embedder.name, embedder.dimension), embedder)
    print(f"{args.split}: {len(queries)} queries")
    print("| method | rrf_k | depth | dense w | keyword w | nDCG@10 | Recall@100 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("dense", "keyword"):
        values = score(qrels, rank_documents(searcher, queries, mode))
        print(f"| {mode} only | | | | | {values['ndcg@10']:.4f} | {values['recall@100']:.4f} | {values['mrr@10']:.4f} |")
    for params in GRID:
        searcher.fusion = params
        values = score(qrels, rank_documents(searcher, queries, "hybrid"))
        row = dataclasses.astuple(params)
        print(f"| {' | '.join(str(x) for x in row)} | {values['ndcg@10']:.4f} | {values['recall@100']:.4f} | "
              f"{values['mrr@10']:.4f} |", flush=True)
    if args.page_depths:
        print("\nFirst page (k = 10, one passage per document), default fusion:\n")
        print("| depth | nDCG@10 | MRR@10 |\n|---|---|---|")
    for depth in args.page_depths:
        searcher.fusion = FusionParams(depth=depth)
        values = score(qrels, rank_documents(searcher, queries, "hybrid", k=10))
        print(f"| {depth} | {values['ndcg@10']:.4f} | {values['mrr@10']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
