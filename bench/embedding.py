"""Embedding throughput by runtime and precision, on the same texts, in one run (issue 10's levers).

    .venv/bin/python bench/embedding.py --dataset "$SCIFACT" --docs 400

The texts are SciFact's title + abstract (the txtai-equivalent workload), cut at the model's 256
word pieces, 32 a batch, longest first. Each variant embeds them twice (the faster pass counts)
and is compared with ONNX Runtime fp32 (today's default): passages/s, mean and lowest cosine,
and query p50 over 200 SciFact queries. Variants:

- `st-torch`: a plain sentence-transformers encode (torch, its defaults): the baseline.
- `ort-fp32`: ONNX Runtime on the fp32 export (what `semsearch index` runs today).
- `ort-int8`: ONNX Runtime, dynamic int8 quantization with per-channel weights.
- `ov-bf16`: OpenVINO on the same ONNX file, bf16 inference (AVX-512 BF16 here).
- `ov-int8`: OpenVINO, int8 weights and activations quantized by NNCF in its transformer mode
  (calibrated on the paragraphs of seeds/, never on the benchmark's texts), bf16 where not int8.
- `ov-int8-corpus`: the same, calibrated on 128 abstracts from the end of the corpus (not among
  the texts embedded): calibration on the kind of text being indexed.
- `ort-int8-7bit`: the same with 7-bit weights (reduce_range), which AVX2 without VNNI cannot saturate.
- `ov-fp32`: OpenVINO on the fp32 export, f32 inference.
- `bf16`, `int8`, `int8-static`: the project's own precisions, exactly as `semsearch index` runs them
  (indexer/model/onnx_encoder.py; `int8`: int8 weights, activations quantized per token at run time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.eval.beir import read_corpus, read_queries  # noqa: E402
from indexer.model.embedding import light_model_for, onnx_copy, packaged_model_path  # noqa: E402

BATCH = 32
MAX_TOKENS = 256
THREADS = 2


def tokenizer(model: Path, padding: bool = True):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding() if padding else tok.no_padding()
    return tok


def feeds(tok, texts: list[str]) -> list[dict]:
    """Model inputs for the texts, BATCH at a time, longest first (less padding)."""
    ordered = sorted(texts, key=len, reverse=True)
    out = []
    for first in range(0, len(ordered), BATCH):
        encodings = tok.encode_batch(ordered[first:first + BATCH])
        out.append({"input_ids": np.array([e.ids for e in encodings], np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
                    "token_type_ids": np.array([e.type_ids for e in encodings], np.int64)})
    return out


def pooled(tokens: np.ndarray, feed: dict) -> np.ndarray:
    mask = feed["attention_mask"][:, :, None].astype(np.float32)
    vectors = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ort_runner(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda feed: session.run(None, {n: feed[n] for n in names})[0]


def ov_runner(path: Path, calibration: list[dict] | None, hint: str = "bf16"):
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    if calibration is not None:
        import nncf

        model = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": str(THREADS)})
    request = compiled.create_infer_request()

    def run(feed: dict) -> np.ndarray:
        request.infer(feed)
        return request.get_output_tensor(0).data.copy()
    return run


def int8_copy(source: Path, scratch: Path, reduce_range: bool = False) -> Path:
    """reduce_range: 7-bit weights, so AVX2's VPMADDUBSW (u8 x s8 pairs summed into 16 bits) cannot
    saturate (ONNX Runtime's advice for CPUs without VNNI)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = scratch / f"model-int8{'-7bit' if reduce_range else ''}.onnx"
    if not target.is_file():
        quantize_dynamic(str(source), str(target), per_channel=True, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8)
    return target


def seed_calibration(model: Path) -> list[dict]:
    """Inputs made of the shipped seed article's paragraphs (news text, not the benchmark's)."""
    texts = [p.strip() for f in sorted((ROOT / "seeds").glob("*")) if f.is_file()
             for p in f.read_text(encoding="utf-8").split("\n\n") if len(p.split()) > 5]
    return [feeds(tokenizer(model), [text])[0] for text in texts]


def corpus_calibration(model: Path, dataset: Path, count: int = 128) -> list[dict]:
    """Inputs made of the corpus' last abstracts, 16 a batch."""
    tail = list(read_corpus(dataset))[-count:]
    return [feeds(tokenizer(model), [f"{d.title}\n{d.text}" for d in tail[i:i + 16]])[0] for i in range(0, count, 16)]


def measure(run, batches: list[dict], query_feeds: list[dict], passages: int) -> tuple[dict, np.ndarray]:
    best, vectors = 0.0, None
    for _ in range(2):
        started = time.perf_counter()
        vectors = np.vstack([pooled(run(feed), feed) for feed in batches])
        best = max(best, passages / (time.perf_counter() - started))
    query_ms = []
    for feed in query_feeds:
        started = time.perf_counter()
        pooled(run(feed), feed)
        query_ms.append(1000 * (time.perf_counter() - started))
    figures = {"passages_per_s": round(best, 1)}
    if query_ms:
        figures["query_p50_ms"] = round(statistics.median(query_ms), 2)
    return figures, vectors


def sentence_transformers_baseline(model: Path, texts: list[str], queries: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(model), device="cpu", local_files_only=True)
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        encoder.encode(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    query_ms = []
    for query in queries:
        started = time.perf_counter()
        encoder.encode([query])
        query_ms.append(1000 * (time.perf_counter() - started))
    return {"passages_per_s": round(best, 1), "query_p50_ms": round(statistics.median(query_ms), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=400, help="abstracts to embed (from the corpus' start)")
    parser.add_argument("--variants", nargs="+", default=["st-torch", "ort-fp32", "ort-int8", "ov-bf16", "ov-int8"])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/semsearch-bench-embedding"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.scratch.mkdir(parents=True, exist_ok=True)
    model = Path(onnx_copy(packaged_model_path()))
    fp32 = model / "onnx" / "model.onnx"
    texts = [f"{d.title}\n{d.text}" for d in list(read_corpus(args.dataset))[:args.docs]]
    queries = list(read_queries(args.dataset).values())[:200]
    batches = feeds(tokenizer(model), texts)
    query_feeds = [feeds(tokenizer(model, padding=False), [q])[0] for q in queries]
    runners = {"ort-fp32": lambda: ort_runner(fp32), "ort-int8": lambda: ort_runner(int8_copy(fp32, args.scratch)),
               "ort-int8-7bit": lambda: ort_runner(int8_copy(fp32, args.scratch, reduce_range=True)),
               "ov-fp32": lambda: ov_runner(fp32, None, "f32"),
               "int8-static": lambda: light_model_for(None, precision="int8-static").runner,
               "ov-bf16": lambda: ov_runner(fp32, None), "ov-int8": lambda: ov_runner(fp32, seed_calibration(model)),
               "ov-int8-corpus": lambda: ov_runner(fp32, corpus_calibration(model, args.dataset)),
               "bf16": lambda: light_model_for(None, precision="bf16").runner,
               "int8": lambda: light_model_for(None, precision="int8").runner}
    report = {"texts": len(texts), "threads": THREADS, "variants": {}}
    _, reference = measure(runners["ort-fp32"](), batches, [], len(texts))
    for name in args.variants:
        if name == "st-torch":
            report["variants"][name] = sentence_transformers_baseline(Path(packaged_model_path()), texts, queries)
            continue
        figures, vectors = measure(runners[name](), batches, query_feeds, len(texts))
        cosines = (vectors * reference).sum(axis=1)
        figures.update(mean_cosine_to_ort_fp32=round(float(cosines.mean()), 5),
                       min_cosine_to_ort_fp32=round(float(cosines.min()), 5))
        report["variants"][name] = figures
        print(name, figures, file=sys.stderr, flush=True)
    emit(report, args.json)


if __name__ == "__main__":
    main()
