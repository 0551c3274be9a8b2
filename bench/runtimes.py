"""Compare query-embedding runtimes: torch fp32, ONNX fp32 (default) and ONNX int8 (queries only).

    .venv/bin/python bench/runtimes.py --dataset "$SCIFACT" --index scifact-index

Reports per-query latency (median, same process), agreement with torch vectors, and SciFact
nDCG@10 when each runtime encodes the queries against the same fp32 passage index (the index
`semsearch eval DATASET --index DIR` keeps).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.engines.faiss import store  # noqa: E402
from indexer.eval.beir import read_qrels, read_queries  # noqa: E402
from indexer.model.embedding import Embedder, onnx_copy, packaged_model_path  # noqa: E402
from indexer.eval.evaluation import rank_documents, score  # noqa: E402
from indexer.search.searcher import Searcher  # noqa: E402


def int8_encoder(scratch: Path):
    """Queries through a dynamically quantized (int8) copy of the ONNX export."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    folder = scratch / "int8"
    shutil.copytree(onnx_copy(packaged_model_path()), folder)
    quantize_dynamic(str(folder / "onnx" / "model.onnx"), str(folder / "onnx" / "model_qint8.onnx"),
                     weight_type=QuantType.QInt8)
    model = SentenceTransformer(str(folder), backend="onnx", device="cpu", local_files_only=True,
                                model_kwargs={"file_name": "onnx/model_qint8.onnx"})
    return lambda text: model.encode([text], normalize_embeddings=True)[0].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    args = parser.parse_args()
    queries = read_queries(args.dataset)
    sample = list(queries.values())[:200]
    onnx, torch_model = Embedder(), Embedder(backend="torch")
    with tempfile.TemporaryDirectory() as scratch:
        encoders = {"torch fp32": torch_model.embed_query, "onnx fp32": onnx.embed_query,
                    "onnx int8 (queries)": int8_encoder(Path(scratch))}
        searcher = Searcher(store.load(args.index, onnx.name, onnx.dimension), onnx)
        print("| runtime | query p50 ms | mean cosine to torch | test dense nDCG@10 | test hybrid nDCG@10 |")
        print("|---|---|---|---|---|")
        qrels = read_qrels(args.dataset, "test")
        judged = {q: queries[q] for q in qrels}
        for name, encode in encoders.items():
            for text in sample[:20]:
                encode(text)
            latencies = []
            for text in sample:
                started = time.perf_counter()
                encode(text + " ?")  # never a cached input
                latencies.append((time.perf_counter() - started) * 1000)
            cosine = np.mean([float(encode(t) @ torch_model.embed_query(t)) for t in sample[:100]])
            searcher.embed_query = encode
            dense = score(qrels, rank_documents(searcher, judged, "dense"))["ndcg@10"]
            hybrid = score(qrels, rank_documents(searcher, judged, "hybrid"))["ndcg@10"]
            print(f"| {name} | {statistics.median(latencies):.2f} | {cosine:.4f} | {dense:.4f} | {hybrid:.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
