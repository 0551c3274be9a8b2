"""Passages/s of a build embedded on Ray (1 and 2 local actors) against the plain local build, in
one run, on the same documents and model, each into an empty index (no cached vector).

    .venv/bin/python bench/ray_embed.py --dataset "$SCIFACT" --documents 1500 --rounds 2

For each arm and round: the build's wall time (what `semsearch index` reports, from reading the
documents to the published index), and for Ray arms also the time to the first vectors back
(connecting to a local Ray started for the arm, starting the actors, each loading the model) and the
steady rate after it (passages between the first and the last batch back, over that time). The
local build's rate is its passages over its embedding time; the driver's own share of a build
(chunking, the cache, writing the engine) is the wall time left when embedding is taken out.
Medians over rounds; the CPU's flags with the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.eval.beir import read_corpus  # noqa: E402
from indexer.index.build import LocalEmbedding, build_from_documents  # noqa: E402
from indexer.cli.commands import model_for_index  # noqa: E402
from indexer.model.cpu import read_cpu  # noqa: E402
from indexer.model.embedding import choose_precision  # noqa: E402


class Timed:
    """An Embedding that notes when each part came back."""

    def __init__(self, inner) -> None:
        self.inner, self.times, self.sizes = inner, [], []

    def embed(self, keys, texts, spans):
        self.started = time.perf_counter()
        for part in self.inner.embed(keys, texts, spans):
            self.times.append(time.perf_counter())
            self.sizes.append(len(part[0]))
            yield part


def one_build(documents, model, actors: int | None) -> dict:
    from indexer.model.ray_embed import RayEmbedding

    remote = None
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
        started = time.perf_counter()
        if actors:
            remote = Timed(RayEmbedding(model, None, choose_precision(None, model.name), None, actors))
        else:
            remote = Timed(LocalEmbedding(model))
        try:
            summary = build_from_documents(documents, Path(scratch) / "index", model, progress=False, remote=remote)
        finally:
            if actors:
                remote.inner.close()
        wall = time.perf_counter() - started
    first, last = remote.times[0], remote.times[-1]
    figures = {"passages": summary.passages, "wall_seconds": round(wall, 1),
               "passages_per_second_wall": round(summary.passages / wall, 1)}
    if actors:
        steady = sum(remote.sizes[1:]) / (last - first) if last > first else float("nan")
        figures.update(first_vectors_after_seconds=round(first - started, 1),
                       steady_passages_per_second=round(steady, 1))
    else:
        embedding = last - remote.started
        figures.update(embedding_seconds=round(embedding, 1),
                       steady_passages_per_second=round(summary.passages / embedding, 1),
                       driver_seconds=round(wall - embedding, 1),
                       driver_passages_per_second=round(summary.passages / max(wall - embedding, 1e-9), 1))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="a BEIR folder (its corpus.jsonl)")
    parser.add_argument("--documents", type=int, default=1500, help="the corpus's first N records")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    documents = list(read_corpus(args.dataset))[:args.documents]
    model = model_for_index(None, None, None)  # a new index's default precision on this CPU
    arms = {"local": None, "ray-1-actor": 1, "ray-2-actors": 2}
    rounds: dict[str, list[dict]] = {arm: [] for arm in arms}
    for number in range(args.rounds):
        for arm, actors in arms.items():
            rounds[arm].append(one_build(documents, model, actors))
            print(f"round {number + 1} {arm}: {rounds[arm][-1]}", file=sys.stderr)
    cpu = read_cpu()
    medians = {arm: {key: statistics.median(r[key] for r in results) for key in results[0]}
               for arm, results in rounds.items()}
    shown = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp"}
    emit({"cpu": {"class": cpu.cpu_class, "flags": sorted(shown & cpu.flags)}, "model": model.name,
          "documents": len(documents), "rounds": rounds, "medians": medians}, args.json)


if __name__ == "__main__":
    main()
