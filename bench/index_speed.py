"""A whole `semsearch index` of a BEIR corpus against a plain sentence-transformers encode of the
same texts, in one run (issue 10's target: the index at most 0.5x the encode's time).

    .venv/bin/python bench/index_speed.py --dataset "$SCIFACT" --rounds 2 --precisions int8 fp32

Each round runs, one after another in fresh processes so none inherits another's threads:
- `st-encode`: sentence-transformers with its defaults (torch, batch 32, the model's 256 word
  pieces) encoding every record's title + abstract, the txtai-equivalent workload; model loading
  is not timed.
- `semsearch index` of a folder holding the corpus file, into an empty index folder, once per
  --precisions entry: the command a user runs, timed from start to exit (process start, model
  load, chunking, embedding, BM25, writing). The model's cached ONNX export and int8 weights
  are made before the first round (a one-time cost per model version, reported separately).

Then, in this process, query embedding p50 of each precision over the dataset's first 300
queries (after 20 warm-up queries). Reports every round and the medians: seconds, passages/s,
and the ratio of each index time to the same round's encode.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.eval.beir import read_queries  # noqa: E402
from indexer.model.embedding import default_precision, light_model_for  # noqa: E402
from indexer.model.onnx_encoder import PRECISIONS  # noqa: E402

SEMSEARCH = Path(sys.executable).with_name("semsearch")
ST_ENCODE = """
import json, sys, time
from pathlib import Path
from sentence_transformers import SentenceTransformer
from indexer.eval.beir import read_corpus
from indexer.model.embedding import packaged_model_path
texts = [f"{d.title}\\n{d.text}" for d in read_corpus(Path(sys.argv[1]))]
model = SentenceTransformer(packaged_model_path(), device="cpu", local_files_only=True)
started = time.perf_counter()
model.encode(texts)
print(json.dumps({"seconds": time.perf_counter() - started, "texts": len(texts)}))
"""


def environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def st_encode(dataset: Path) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", ST_ENCODE, str(dataset)], capture_output=True, text=True,
                         env=environment(), check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return {"seconds": round(figures["seconds"], 1), "passages_per_s": round(figures["texts"] / figures["seconds"], 1)}


def semsearch_index(corpus_folder: Path, precision: str, scratch: Path) -> dict:
    out_dir = scratch / f"index-{precision}"
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.perf_counter()
    out = subprocess.run([str(SEMSEARCH), "index", str(corpus_folder), "--out", str(out_dir), "--precision", precision],
                         capture_output=True, text=True, env=environment(), check=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(out_dir, ignore_errors=True)
    passages = int(re.search(r"embedded (\d+) of", out.stdout).group(1))
    return {"seconds": round(seconds, 1), "passages": passages, "passages_per_s": round(passages / seconds, 1)}


def query_p50(precision: str, queries: list[str]) -> float:
    model = light_model_for(None, precision=precision)
    for query in queries[:20]:
        model.embed_query(query)
    took = []
    for query in queries:
        started = time.perf_counter()
        model.embed_query(query)
        took.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(took), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=[default_precision()])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dataset = args.dataset.resolve()
    report: dict = {"dataset": dataset.name, "rounds": [], "model_preparation_s": {}}
    for precision in args.precisions:  # the one-time export / int8 weights, outside the timings
        started = time.perf_counter()
        light_model_for(None, precision=precision)
        report["model_preparation_s"][precision] = round(time.perf_counter() - started, 1)
    with tempfile.TemporaryDirectory(prefix="semsearch-index-speed-") as scratch:
        corpus_folder = Path(scratch) / "corpus"
        corpus_folder.mkdir()
        os.symlink(dataset / "corpus.jsonl", corpus_folder / "corpus.jsonl")
        for number in range(args.rounds):
            encode = st_encode(dataset)
            entry = {"st_encode": encode}
            for precision in args.precisions:
                figures = semsearch_index(corpus_folder, precision, Path(scratch))
                figures["vs_st_encode"] = round(figures["seconds"] / encode["seconds"], 3)
                entry[f"index_{precision}"] = figures
            report["rounds"].append(entry)
            print(f"round {number + 1}: {entry}", file=sys.stderr, flush=True)
    keys = report["rounds"][0].keys()
    report["median"] = {key: {field: statistics.median(r[key][field] for r in report["rounds"])
                              for field in report["rounds"][0][key]} for key in keys}
    queries = list(read_queries(dataset).values())[:300]
    report["query_p50_ms"] = {precision: query_p50(precision, queries) for precision in args.precisions}
    emit(report, args.json)


if __name__ == "__main__":
    main()
