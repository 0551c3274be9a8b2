"""Benchmark incremental reindexing on a BEIR corpus: full build, unchanged rebuild, one-document change.

    .venv/bin/python bench/reindex.py --dataset "$SCIFACT"

The target: a rebuild of an unchanged corpus embeds nothing and takes under 5% of the first build.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import emit  # noqa: E402
from indexer.eval.beir import read_corpus  # noqa: E402
from indexer.index.build import build_from_documents  # noqa: E402
from indexer.model.embedding import Embedder  # noqa: E402


def timed_rebuild(dataset: Path, index: Path, embedder: Embedder) -> float:
    """Seconds for what `semsearch index` does after loading the model: read, hash, compare (and embed nothing)."""
    started = time.perf_counter()
    summary = build_from_documents(read_corpus(dataset), index, embedder)
    assert summary.passages_embedded == 0 and summary.generation is None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5, help="unchanged rebuilds to time (median reported)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    embedder = Embedder()
    documents = read_corpus(args.dataset)
    with tempfile.TemporaryDirectory() as scratch:
        index = Path(scratch) / "index"
        first = build_from_documents(documents, index, embedder)
        unchanged = sorted(timed_rebuild(args.dataset, index, embedder) for _ in range(args.repeats))
        edited = list(documents)
        edited[0] = dataclasses.replace(edited[0], text=edited[0].text + " Edited for the benchmark.")
        one_change = build_from_documents(edited, index, embedder)
    median = unchanged[len(unchanged) // 2]
    report = {
        "documents": first.documents, "passages": first.passages,
        "first_build_s": round(first.seconds, 1), "first_build_passages_per_s": round(first.passages / first.seconds, 1),
        "unchanged_rebuild_median_s": round(median, 2), "unchanged_runs_s": [round(s, 2) for s in unchanged],
        "unchanged_share_of_first": round(median / first.seconds, 4),
        "one_changed_doc_s": round(one_change.seconds, 1), "one_changed_doc_embedded": one_change.passages_embedded,
    }
    emit(report, args.json)


if __name__ == "__main__":
    main()
