"""Where a real-model build's time goes: `semsearch index`'s code path under cProfile.

    .venv/bin/python bench/build_profile.py --dataset ../shared/eval/scifact --docs 500

Indexes the first --docs abstracts of a BEIR corpus with the packaged model into a temporary
folder (a fresh embedding cache, so everything is embedded) and splits the wall time into:
the model's forward pass, batch tokenization, token pooling of sentence vectors, chunking
(tokenizing whole texts for passage cuts), the embedding cache, writing the segment, and the
rest (Python between batches). Profiling adds overhead to the Python parts, so treat them as
upper bounds. Also: the share of the forward pass's token slots that are padding, for the same
passages in the same batches (longest first by word pieces, BATCH_SIZE a batch, as
indexer/pooling.py runs them).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.beir import read_corpus  # noqa: E402
from indexer.build import build_from_documents, chunk  # noqa: E402
from indexer.documents import StoredDocument  # noqa: E402
from indexer.embedding import Embedder  # noqa: E402
from indexer.pooling import BATCH_SIZE  # noqa: E402

# (share, function names whose cumulative time belongs to it); the first match wins, in this order.
PARTS = [
    ("forward pass (ONNX Runtime)", ("run",), "onnx_encoder"),
    ("tokenizing batches", ("encode_batch",), "~"),
    ("pooling sentence vectors", ("pool_spans",), "pooling"),
    ("chunking (whole-text tokenizing, sentence cuts)", ("chunk",), "build"),
    ("embedding cache (SQLite)", ("put_many", "get_many"), "cache"),
    ("writing the segment and publishing", ("add_segment", "publish"), ""),
]


def cumulative(stats: pstats.Stats, names: tuple[str, ...], module: str) -> float:
    total = 0.0
    for (filename, _, function), (_, _, _, cumtime, _) in stats.stats.items():
        named = function in names or any(f"'{name}'" in function for name in names)  # builtins: "<method 'x' ...>"
        if named and module in filename:
            total += cumtime
    return total


def padding_share(documents, embedder) -> float:
    """Padding slots / all token slots over the build's batches."""
    inputs = [text for d in documents for text in chunk(StoredDocument(d, "folder", ""), embedder)[2]]
    lengths = sorted((len(e.ids) for e in embedder.onnx.query_tokenizer.encode_batch(inputs)), reverse=True)
    slots = sum(max(lengths[i:i + BATCH_SIZE]) * len(lengths[i:i + BATCH_SIZE]) for i in range(0, len(lengths), BATCH_SIZE))
    return 1 - sum(lengths) / slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    documents = list(read_corpus(args.dataset))[:args.docs]
    embedder = Embedder()
    with tempfile.TemporaryDirectory() as scratch:
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        summary = build_from_documents(documents, Path(scratch) / "index", embedder, progress=False)
        profile.disable()
        wall = time.perf_counter() - started
    stats = pstats.Stats(profile)
    parts = {name: round(cumulative(stats, names, module), 2) for name, names, module in PARTS}
    parts["rest (Python between batches, loading)"] = round(wall - sum(parts.values()), 2)
    emit({"documents": summary.documents, "passages": summary.passages, "wall_s": round(wall, 1),
          "passages_per_s": round(summary.passages / wall, 1),
          "padding_share_of_token_slots": round(padding_share(documents, embedder), 3),
          "seconds": parts, "share": {k: round(v / wall, 3) for k, v in parts.items()}}, args.json)


if __name__ == "__main__":
    main()
