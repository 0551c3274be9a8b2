"""Merges: combine small segments into one larger segment, dropping deleted rows.

The heavy part (reading the sources, writing the merged segment, building its approximate index)
runs without the build lock, so ingests and searches go on. Only the publish takes the lock: it
re-reads the current generation, gives up if a source has gone meanwhile, and carries over
deletions made during the merge (ids are stable, so a tombstone names the same passage in the
merged segment). A killed merge leaves only a staging folder, removed by the next writer.
"""

from __future__ import annotations

import logging
import math
import shutil
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.engines.faiss import postings, rowfile, store
from indexer.engines.faiss.dense import DenseParams
from indexer.index.durable import flush_tree
from indexer.engines.faiss.segment import (MINHASHES, PIECE_BOUNDS, PIECE_CODES, TABLES, Segment, create_tables, finish,
                                           has_metadata, index_tables,
                                           save_document_list, save_postings)
from indexer.engines.faiss.writer import SegmentStore

log = logging.getLogger(__name__)
CHUNK = 50_000  # rows copied at a time: a merge's memory stays flat whatever the segment sizes


@dataclass(frozen=True)
class MergePolicy:
    """Tiered, as Lucene's: segments of similar size (within a factor) are merged `factor` at a time."""

    factor: int = 4
    floor: int = 2_000           # segments smaller than this are all one tier
    expunge_fraction: float = 0.3  # a segment with more deleted rows than this is rewritten

    def tier(self, rows: int) -> int:
        return 0 if rows < self.floor else 1 + int(math.log(rows / self.floor, self.factor))

    def plan(self, manifest: dict) -> list[str]:
        """Names of the segments to merge next (empty: nothing worth merging)."""
        tiers: dict[int, list[dict]] = {}
        for entry in manifest["segments"]:
            live = entry["passages"] - entry.get("deleted", 0)
            if entry.get("deleted", 0) > self.expunge_fraction * entry["passages"]:
                return [entry["name"]]
            tiers.setdefault(self.tier(live), []).append(entry)
        for tier in sorted(tiers):
            if len(tiers[tier]) >= self.factor:
                return [e["name"] for e in tiers[tier]]
        return []


@dataclass(frozen=True)
class MergeResult:
    generation: str | None  # None: abandoned (a source was merged or dropped by someone else)
    sources: tuple[str, ...]
    rows: int
    seconds: float


def merge_once(writer: SegmentStore, policy: MergePolicy = MergePolicy()) -> MergeResult | None:
    """Run the merge the policy asks for on the current generation, if any."""
    state = writer.state()
    names = policy.plan(state[1]) if state else []
    if not names:
        return None
    started = time.perf_counter()
    views = dict((segment.name, (segment, dead)) for segment, dead in writer.segments(*state))
    sources = [views[name] for name in names]
    staging = store.new_staging(writer.root, store.new_name("seg"))
    folder = staging / staging.name.removeprefix(".building-").rsplit("-", 1)[0]
    rows = 0
    try:
        info = write_merged(folder, sources, writer.model, writer.params)
        rows = info["passages"]
        flush_tree(folder)  # the slow flush before the lock: installing it later is a rename
        with store.build_lock(writer.root):
            generation = publish_merge(writer, names, folder, info)
    except (OSError, sqlite3.Error) as exc:
        # Another writer (a `semsearch index` in another process) may have replaced a source and
        # its files since: then the merge is moot, not a failure; merge_all plans again.
        if still_current(writer, names):
            raise
        log.info("merge of %d segments abandoned: a source was replaced meanwhile (%s)", len(names), exc)
        generation = None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = MergeResult(generation, tuple(names), rows, time.perf_counter() - started)
    log.info("merged %d segments (%d live passages) in %.1fs -> %s", len(names), result.rows, result.seconds,
             generation or "abandoned")
    return result


def merge_all(writer: SegmentStore, policy: MergePolicy = MergePolicy(), retries: int = 3) -> list[MergeResult]:
    """Merge until the policy is satisfied (a cascade: merged segments may form a full tier). A
    merge abandoned because another writer changed its sources is planned again on the new
    generation, up to retries times."""
    results = []
    while (result := merge_once(writer, policy)) is not None:
        if result.generation is not None:
            results.append(result)
        elif (retries := retries - 1) < 0:
            break
    return results


def still_current(writer: SegmentStore, names: list[str]) -> bool:
    """Whether every one of these segments is still in the current generation."""
    state = writer.state()
    return state is not None and set(names) <= {entry["name"] for entry in state[1]["segments"]}


def publish_merge(writer: SegmentStore, names: list[str], folder: Path, info: dict) -> str | None:
    """Swap the sources for the merged segment in the current generation (build lock held)."""
    state = writer.state()
    entries = {e["name"]: e for e in state[1]["segments"]} if state else {}
    if not all(name in entries for name in names):
        return None
    tombstones = store.tombstones_of(writer.root, *state)
    ids = rowfile.load(folder / "ids.npy")  # not the whole segment: its approximate index can be large
    with closing(sqlite3.connect(folder / TABLES)) as db:
        numbers = [n for (n,) in db.execute("SELECT doc_number FROM documents")]
    carried = np.union1d(ids, np.array(numbers, dtype=np.int64))
    dead = np.intersect1d(np.concatenate([tombstones[n] for n in names]), carried)  # deleted meanwhile
    deleted = len(np.intersect1d(dead, ids))
    entry = None
    if info["passages"] or info["documents"]:  # else the sources held only deleted rows: drop them
        target = store.install_segment(writer.root, folder)
        entry = {"name": info["name"], "info_sha256": store.sha256_of(target / "segment.json"),
                 "passages": info["passages"], "deleted": deleted}
    segments, placed = [], False
    for existing in state[1]["segments"]:
        if existing["name"] in names:
            if not placed and entry is not None:
                segments.append(entry)
            placed = True
            continue
        segments.append(existing)
    kept = {name: t for name, t in tombstones.items() if name not in names}
    if entry is not None:
        kept[info["name"]] = dead
    return store.publish(writer.root, {**state[1], "segments": segments}, kept)


def write_merged(folder: Path, sources: list[tuple[Segment, np.ndarray]], model: str, params: DenseParams) -> dict:
    """Write the live rows of the sources, ordered by id, as one new segment."""
    folder.mkdir(parents=True)
    picks = []  # (source index, live rows) per source
    for s, (segment, dead) in enumerate(sources):
        live = np.ones(len(segment), dtype=bool)
        live[segment.rows_of(dead)] = False
        picks.append(np.flatnonzero(live))
    source_of = np.concatenate([np.full(len(rows), s) for s, rows in enumerate(picks)]).astype(np.int64)
    row_of = np.concatenate(picks).astype(np.int64)
    ids = np.concatenate([sources[s][0].ids[rows] for s, rows in enumerate(picks)])
    order = np.argsort(ids, kind="stable")
    ids, source_of, row_of = ids[order], source_of[order], row_of[order]
    np.save(folder / "ids.npy", ids)
    np.save(folder / "doc_numbers.npy", gather([s.doc_numbers for s, _ in sources], source_of, row_of))
    copy_rows(folder / "vectors.npy", [s.dense.vectors for s, _ in sources], source_of, row_of)
    bounds, sentence_source, sentence_row = ranges([s.sentence_bounds for s, _ in sources], source_of, row_of)
    np.save(folder / "sentence_bounds.npy", bounds)
    copy_rows(folder / "sentence_spans.npy", [s.sentence_spans for s, _ in sources], sentence_source, sentence_row)
    copy_rows(folder / "sentence_vectors.npy", [s.sentence_vectors for s, _ in sources], sentence_source, sentence_row)
    if all(s.piece_codes is not None for s, _ in sources):  # else the merged segment has none, as its sources
        bounds, piece_source, piece_row = ranges([s.piece_bounds for s, _ in sources], source_of, row_of)
        np.save(folder / PIECE_BOUNDS, bounds)
        copy_rows(folder / PIECE_CODES, [s.piece_codes for s, _ in sources], piece_source, piece_row)
    copy_rows(folder / MINHASHES, [s.minhashes if s.minhashes is not None else s.signatures(np.arange(len(s)))
                                   for s, _ in sources], source_of, row_of)
    with sqlite3.connect(folder / TABLES) as db:
        create_tables(db)
        save_postings(folder, db, merged_postings(sources, source_of, row_of))
        copy_tables(db, sources, ids)
        index_tables(db)
        save_document_list(folder, db)
        documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    db.close()
    return finish(folder, model, len(ids), documents, params)


def ranges(bounds: list, source_of: np.ndarray, row_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows that own ranges of another array (sentences, pieces; bounds per source): the merged
    bounds, and the source and row of each merged range row (each passage's range expanded)."""
    counts = gather([np.diff(np.asarray(b)) for b in bounds], source_of, row_of)
    firsts = gather([np.asarray(b[:-1]) for b in bounds], source_of, row_of)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.repeat(firsts - starts[:-1], counts) + np.arange(int(counts.sum()))
    return starts, np.repeat(source_of, counts), rows


def gather(arrays: list[np.ndarray], source_of: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """arrays[source_of[i]][row_of[i]] for every i."""
    out = np.empty(len(row_of), dtype=np.asarray(arrays[0][:0]).dtype)
    for s, array in enumerate(arrays):
        mine = source_of == s
        out[mine] = np.asarray(array)[row_of[mine]]
    return out


def copy_rows(path: Path, arrays: list[np.ndarray], source_of: np.ndarray, row_of: np.ndarray) -> None:
    """Write the gathered rows of 2-D arrays to a .npy file, CHUNK rows at a time."""
    shape = (len(row_of), arrays[0].shape[1])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=arrays[0].dtype, shape=shape)
    for first in range(0, len(row_of), CHUNK):
        sources, rows = source_of[first:first + CHUNK], row_of[first:first + CHUNK]
        for s, array in enumerate(arrays):
            mine = np.flatnonzero(sources == s)
            if len(mine):
                out[first + mine] = array[rows[mine]]
    out.flush()
    del out


def merged_postings(sources: list[tuple[Segment, np.ndarray]], source_of: np.ndarray,
                    row_of: np.ndarray) -> postings.Postings:
    """The sources' postings of live rows, renumbered to the merged rows."""
    vocabulary: dict[str, int] = {}
    term_ids, rows, tfs = [], [], []
    for s, (segment, _) in enumerate(sources):
        new_row = np.full(len(segment), -1, dtype=np.int64)
        mine = np.flatnonzero(source_of == s)
        new_row[row_of[mine]] = mine
        terms = segment.db.execute("SELECT term, start, count FROM terms ORDER BY start").fetchall()
        local = np.array([vocabulary.setdefault(t, len(vocabulary)) for t, _, _ in terms], dtype=np.int64)
        counts = np.array([c for _, _, c in terms], dtype=np.int64)
        remapped = new_row[np.asarray(segment.postings_rows, dtype=np.int64)]
        keep = remapped >= 0
        term_ids.append(np.repeat(local, counts)[keep])
        rows.append(remapped[keep])
        tfs.append(np.asarray(segment.postings_tfs)[keep].astype(np.int64))
    lengths = gather([s.lengths for s, _ in sources], source_of, row_of)
    return postings.from_pairs(list(vocabulary), np.concatenate(term_ids), np.concatenate(rows),
                               np.concatenate(tfs), lengths.astype(np.int64))


def copy_tables(db: sqlite3.Connection, sources: list[tuple[Segment, np.ndarray]], ids: np.ndarray) -> None:
    """Passages of the merged ids and the documents still live, copied row for row in SQL."""
    db.execute("CREATE TEMP TABLE keep (id INTEGER PRIMARY KEY)")
    db.executemany("INSERT INTO keep VALUES (?)", ((int(i),) for i in ids))
    for n, (segment, dead) in enumerate(sources):
        db.execute(f"ATTACH DATABASE ? AS source{n}", [str(segment.folder / TABLES)])
        db.execute(f"INSERT INTO passages SELECT * FROM source{n}.passages WHERE id IN (SELECT id FROM keep)")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM dead")
        db.executemany("INSERT OR IGNORE INTO dead VALUES (?)", ((int(i),) for i in dead))
        # Named columns: a segment written before documents had metadata gives NULL for it.
        metadata = "metadata" if has_metadata(db, f"source{n}") else "NULL"
        db.execute(f"INSERT INTO documents SELECT doc_number, doc_id, title, source, text, origin, content_hash, "
                   f"{metadata} FROM source{n}.documents WHERE doc_number NOT IN (SELECT id FROM dead)")
        db.commit()
        db.execute(f"DETACH DATABASE source{n}")
