"""Score every retrieval mode on a BEIR dataset: nDCG@10, Recall@100 and MRR@10 (via ranx)."""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

from indexer.eval.beir import read_corpus, read_qrels, read_queries
from indexer.index.build import build_from_documents
from indexer.model.embedding import TextModel
from indexer.index.engine import open_engine
from indexer.errors import MODES
from indexer.search.searcher import FusionParams, Query, Searcher

log = logging.getLogger(__name__)
METRICS = ("ndcg@10", "recall@100", "mrr@10")
DEPTH = 100  # documents ranked per query: enough for Recall@100


def rank_documents(searcher: Searcher, queries: dict[str, str], mode: str, k: int = DEPTH) -> dict[str, dict[str, float]]:
    """query id -> {doc id: score} of the top k documents; a document ranks by its best passage."""
    run = {}
    for query_id, text in queries.items():
        hits = searcher.search(Query(text=text, k=k, mode=mode, group="document", min_relevance=0))
        # Scores from the rank, so the metric library sees exactly our order (no tie reshuffling).
        run[query_id] = {hit.passage.doc_id: 1.0 / hit.rank for hit in hits}
    return run


def score(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """The metrics with ranx; its "ndcg" is trec_eval's linear-gain nDCG."""
    from ranx import Qrels, Run, evaluate

    # Queries that found nothing still count, as zeros.
    run = {query_id: run.get(query_id) or {"__none__": 0.0} for query_id in qrels}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-cast chatter
        values = evaluate(Qrels(qrels), Run(run), list(METRICS))
    return {metric: round(float(values[metric]), 4) for metric in METRICS}


def evaluate_dataset(dataset: Path, split: str, embedder: TextModel, index: Path | None = None,
                     fusion: FusionParams = FusionParams(), modes: tuple[str, ...] = MODES,
                     progress: bool | None = None, engine: dict | None = None) -> dict:
    """Index the corpus (into index if given, where an earlier build is brought up to date), rank
    every judged query in every mode, and score each mode. engine: open_engine's kind and options
    (None: the index's own engine, else FAISS)."""
    dataset = Path(dataset)
    qrels = read_qrels(dataset, split)
    all_queries = read_queries(dataset)
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    report: dict = {"dataset": dataset.name, "split": split, "queries": len(queries), "results": {}}
    with tempfile.TemporaryDirectory(prefix="semsearch-eval-") as scratch:
        index = Path(index or scratch)
        opened = open_engine(index, embedder.name, embedder.dimension, **(engine or {}))
        summary = build_from_documents(read_corpus(dataset), index, embedder, progress, str(dataset), engine=opened)
        report["index"] = {"documents": summary.documents, "passages": summary.passages,
                           "passages_embedded": summary.passages_embedded, "seconds": round(summary.seconds, 1)}
        searcher = Searcher(opened.reader(), embedder, fusion)
        for mode in modes:
            started = time.perf_counter()
            run = rank_documents(searcher, queries, mode)
            seconds = round(time.perf_counter() - started, 2)
            report["results"][mode] = {**score(qrels, run), "seconds": seconds}
            log.info("%s: %s", mode, report["results"][mode])
    return report


def mode_table(heading: str, results: dict[str, dict], metrics: dict[str, str]) -> list[str]:
    """Lines of a Markdown table under a heading: a row per mode, a column per metric (key: label)
    to four places, then the seconds the mode took. Shared by both kinds of `semsearch eval`."""
    lines = [heading, "", "| mode | " + " | ".join(metrics.values()) + " | seconds |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for mode, values in results.items():
        lines.append(f"| {mode} | " + " | ".join(f"{values[key]:.4f}" for key in metrics) + f" | {values['seconds']} |")
    return lines


def format_table(report: dict) -> str:
    """The report as a Markdown table."""
    return "\n".join(mode_table(f"{report['dataset']} ({report['split']}, {report['queries']} queries)",
                                report["results"], {"ndcg@10": "nDCG@10", "recall@100": "Recall@100",
                                                    "mrr@10": "MRR@10"}))
