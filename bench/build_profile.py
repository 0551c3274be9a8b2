"""Where a real-model build's time goes: `semsearch index`'s code path under cProfile.

    .venv/bin/python bench/build_profile.py --dataset "$SCIFACT" --docs 500 [--precision fp32]

Indexes the first --docs abstracts of a BEIR corpus with the packaged model (at the default
precision unless --precision says otherwise) into a temporary
folder (a fresh embedding cache, so everything is embedded) and reports the model's forward pass
(timed inside the runner, in the worker thread that runs it) and the main thread's time under
cProfile: tokenization, token pooling of sentence vectors, chunking (tokenizing whole texts for
passage cuts), the embedding cache, writing the segment, waiting for the model, and the rest.
The worker's forward pass overlaps the main thread's pooling, so the parts add up to more than
the wall time; profiling adds overhead to the Python parts, so treat them as upper bounds. Also:
the share of the forward pass's token slots that are padding, for the same passages in the same
batches (longest first by word pieces, BATCH_SIZE a batch, padded to a multiple of
PAD_MULTIPLE, as indexer/model/pooling.py and indexer/model/onnx_encoder.py run them).
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
from indexer.eval.beir import read_corpus  # noqa: E402
from indexer.index.build import build_from_documents, chunk  # noqa: E402
from indexer.text.documents import StoredDocument  # noqa: E402
from indexer.model.embedding import default_precision, light_model_for  # noqa: E402
from indexer.model.onnx_encoder import PAD_MULTIPLE, PRECISIONS, OnnxEncoder  # noqa: E402
from indexer.model.pooling import BATCH_SIZE  # noqa: E402

# Main-thread parts: (name, function names whose cumulative time belongs to it, module).
PARTS = [
    ("waiting for the model", ("result",), "concurrent"),
    ("tokenizing model inputs", ("tokenize",), "onnx_encoder"),
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
    lengths = sorted(embedder.tokenize(inputs)[1], reverse=True)
    batches = [lengths[i:i + BATCH_SIZE] for i in range(0, len(lengths), BATCH_SIZE)]
    slots = sum(-(-batch[0] // PAD_MULTIPLE) * PAD_MULTIPLE * len(batch) for batch in batches)
    return 1 - sum(lengths) / slots


class TimedRunner:
    """The encoder's runner, timing every call (from whichever thread makes it)."""

    def __init__(self, runner) -> None:
        self.runner, self.input_names, self.seconds = runner, runner.input_names, 0.0

    def __call__(self, feeds):
        started = time.perf_counter()
        try:
            return self.runner(feeds)
        finally:
            self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--precision", choices=PRECISIONS, default=default_precision())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    documents = list(read_corpus(args.dataset))[:args.docs]
    embedder = light_model_for(None, precision=args.precision)
    if not isinstance(embedder, OnnxEncoder):
        sys.exit("run `semsearch index seeds` once first: the model's recipe is not cached yet")
    embedder.runner = timed = TimedRunner(embedder.runner)
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
    emit({"precision": args.precision, "documents": summary.documents, "passages": summary.passages,
          "wall_s": round(wall, 1), "passages_per_s": round(summary.passages / wall, 1),
          "forward_pass_s": round(timed.seconds, 1), "forward_share_of_wall": round(timed.seconds / wall, 3),
          "padding_share_of_token_slots": round(padding_share(documents, embedder), 3),
          "main_thread_seconds": parts, "main_thread_share": {k: round(v / wall, 3) for k, v in parts.items()}},
         args.json)


if __name__ == "__main__":
    main()
