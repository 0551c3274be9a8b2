"""The FAISS segments engine: immutable segments in index/segments/, generations listing them.

The Engine (indexer/index/engine.py) over store.py (generations, the CURRENT pointer, checksums),
segments.py (the reader), writer.py (the writer) and merge.py (upkeep). It keeps the segments
this process has opened, shared by its readers and writers, so a reload or an ingest opens and
checks only new segments.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from indexer.engines.faiss import damage, store
from indexer.engines.faiss.dense import DenseParams
from indexer.index.engine import Damage, IndexReader
from indexer.index.progress import count
from indexer.engines.faiss.merge import MergePolicy, merge_all
from indexer.engines.faiss.segment import Segment
from indexer.engines.faiss.segments import SegmentIndex, open_index
from indexer.engines.faiss.writer import SegmentStore


class FaissEngine:
    """FAISS segments in the folder root, for vectors of one model."""

    def __init__(self, root: Path, model: str, dimension: int, params: DenseParams | None = None,
                 policy: MergePolicy = MergePolicy(), ann_min_rows: int | None = None, **_other) -> None:
        """ann_min_rows: segments with at least this many passages get an approximate index (IVF);
        other engines' options are left aside."""
        params = params or DenseParams()
        if ann_min_rows is not None:
            params = replace(params, ann_min_rows=max(int(ann_min_rows), 1))
        self.root, self.model, self.dimension = Path(root), model, dimension
        self.params, self.policy = params, policy
        self.opened: dict[str, Segment] = {}  # by name; opened (and checked) once per process

    def current(self) -> str | None:
        return store.current_generation(self.root)

    @staticmethod
    def recorded_model(root: Path, **_options) -> dict | None:
        return (store.recorded_manifest(root) or {}).get("model") or None

    def describe(self) -> dict:
        return {"engine": "faiss"}

    def reader(self) -> SegmentIndex:
        return open_index(self.root, self.model, self.dimension, self.opened, self.params)

    def writer(self) -> SegmentStore:
        return SegmentStore(self.root, self.model, self.dimension, self.params, self.opened)

    def prepare(self) -> None:
        """Open (and check) the newest generation's segments not opened yet. Checking a large
        merged segment's files takes seconds; done here, before the service's reload lock, an
        ingest waiting to switch generations never waits for it. Problems are left for reader()."""
        manifest = store.read_manifest(self.root)
        for entry in (manifest or {}).get("segments", ()):
            if entry.get("name") and entry["name"] not in self.opened:
                try:
                    segment = store.open_segment(self.root, entry, self.params)
                except (store.IndexUnavailable, KeyError):
                    return
                self.opened.setdefault(entry["name"], segment)

    def maintain(self) -> list[str]:
        """Merge small segments as the policy asks (writes without the build lock, publishes with it)."""
        return [f"merged {count(len(m.sources), 'segment')} ({count(m.rows, 'live passage')}) in {m.seconds:.1f}s"
                for m in merge_all(self.writer(), self.policy)]

    def release(self, serving: IndexReader) -> None:
        """Drop segments the serving generation no longer lists; searches still using an older
        snapshot hold their own references."""
        for name in set(self.opened) - {entry["name"] for entry in serving.manifest["segments"]}:
            del self.opened[name]

    def close(self) -> None:
        return None  # segments are files: other processes read them whatever this one holds

    def inspect(self) -> Damage:
        return damage.inspect(self.root, self.params, self.opened)

    def repairer(self, found: Damage) -> SegmentStore:
        return damage.RepairingStore(self.root, self.model, self.dimension, self.params, self.opened, found.plan)
