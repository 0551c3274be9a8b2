"""Repair a damaged index through the engine seam: keep what is whole, rebuild what is not.

The engine inspects the index (indexer/index/engine.py: Damage). Documents of its damaged parts that
can be read back whole are chunked and embedded again, reusing every vector read back from
intact files, and published with the rest of the index in one commit. Nothing is dropped
silently: documents ingested over HTTP that nothing holds whole stop the repair until the
caller accepts their loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from indexer.index.build import after_publish, chunker_fingerprint, prepare
from indexer.model.embedding import TextModel
from indexer.index.engine import ChangeSet, Damage, Engine, IndexDamaged
from indexer.errors import fix_command
from indexer.index.progress import count
from indexer.index.folder import build_lock

SHOWN = 20  # documents named in a message


@dataclass(frozen=True)
class RepairSummary:
    """What a repair found and did; generation is None when the index was intact."""

    damage: Damage
    generation: str | None
    recovered: int
    embedded: int
    seconds: float


class LossRefused(IndexDamaged):
    """A repair would lose documents ingested over HTTP; it changes nothing until told to."""

    def __init__(self, root: Path, damage: Damage) -> None:
        super().__init__(f"{'; '.join(damage.problems)}. What a repair cannot read back of the documents "
                         f"ingested over HTTP: {named(damage.lost)}. Nothing was changed",
                         fix_command("repair", Path(root), "--accept-loss",
                                     note="keeps every other document; post those again afterwards"))


def named(items: tuple[str, ...]) -> str:
    return ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def repair_index(root: Path, embedder: TextModel, engine: Engine, accept_loss: bool = False) -> RepairSummary:
    """Publish the index without its damaged parts plus every document of them read back whole.

    Raises LossRefused (before writing) when documents ingested over HTTP cannot be read back and
    accept_loss is not set. Folder documents that cannot be read back are left to the next
    reindex of their folder (Damage.lost_from_folders)."""
    started = time.perf_counter()
    with build_lock(root):
        damage = engine.inspect()
        if damage.intact and damage.newer is None:
            return RepairSummary(damage, None, 0, 0, time.perf_counter() - started)
        if damage.lost and not accept_loss:
            raise LossRefused(root, damage)
        if damage.model not in (None, embedder.name):
            raise IndexDamaged(f"the index records model {damage.model}, not {embedder.name}; a repair must "
                               "embed with the index's own model", fix_command("repair", Path(root)))
        writer = engine.repairer(damage)
        health = writer.health()
        fingerprint = chunker_fingerprint(embedder)
        chunker = fingerprint if health.generation is None or health.chunker == fingerprint else None
        embedded = [0]
        batches = prepare(list(damage.recoverable), embedder, writer, Path(root), False, embedded)
        name = writer.apply(ChangeSet(upserts=batches, chunker=chunker))
        after_publish(Path(root), embedder)
    return RepairSummary(damage, name, len(damage.recoverable), embedded[0], time.perf_counter() - started)


def report(summary: RepairSummary, root: Path) -> list[str]:
    """What a repair did, in lines for the terminal."""
    damage = summary.damage
    if summary.generation is None:
        return [f"index {root} is intact: nothing to repair"]
    lines = [f"damaged: {problem}" for problem in damage.problems]
    if damage.newer is not None:
        lines.append(f"CURRENT named a generation older than {damage.newer}, which is whole: the index now serves "
                     f"what {damage.newer} holds")
    again = (f"{count(summary.recovered, 'document')} of the damaged parts read back whole and indexed again "
             f"({summary.embedded} passages embedded, the rest reused)" if summary.recovered else
             "nothing had to be indexed again")
    lines.append(f"repaired {root}: {again}, in {summary.seconds:.1f}s -> {summary.generation}")
    if damage.lost:
        lines.append(f"lost (accepted): {named(damage.lost)}")
    if damage.lost_from_folders:
        lines.append(f"not in the index until their folder is indexed again: {named(damage.lost_from_folders)}")
    return lines
