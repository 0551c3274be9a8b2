"""The one place that reads and writes index/: segments, generations, tombstones and the pointer.

index/segments/<name>/      immutable segments (indexer/engines/faiss/segment.py)
index/gen-<time>-<id>/      a generation: manifest.json (its live segments, counts, next id) and
                            tombstones/<segment>.npy (ids deleted from that segment)
index/CURRENT               the generation in use, switched with one atomic rename
A change writes a new small segment and new tombstone files, never the segments it keeps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from indexer.engines.faiss import rowfile
from indexer.engines.faiss.dense import DenseParams
from indexer.index.engine import IndexDamaged, IndexUnavailable  # noqa: F401 (importers name them store.*)
from indexer.text.documents import holds_articles
from indexer.errors import fix_command
from indexer.index.durable import flush_tree, make_folder, move_into_place, write_file
from indexer.engines.faiss.integrity import checksums, first_mismatch, sha256_of
from indexer.engines.faiss.segment import INFO, Segment
from indexer.index.folder import build_lock, sqlite_transaction  # noqa: F401 (the engine's modules name them store.*)

log = logging.getLogger(__name__)
FORMAT_VERSION = 3  # 3: segments with stable ids and tombstones
POINTER = "CURRENT"
SEGMENTS = "segments"
KEEP_GENERATIONS = 3


def new_name(prefix: str) -> str:
    """A unique name that sorts in creation order (microseconds)."""
    return datetime.now(timezone.utc).strftime(f"{prefix}-%Y%m%dT%H%M%S%fZ-") + uuid.uuid4().hex[:6]


def new_staging(root: Path, name: str) -> Path:
    """A folder to write name into; leftovers of killed writers are removed first."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".building-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and running(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = root / f".building-{name}-{os.getpid()}"
    staging.mkdir()
    return staging


def running(pid: int) -> bool:
    """Whether a process pid runs (asked of the kernel, not of /proc, which another system or a
    container may not have or may show for another set of processes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's: running
    return True


def rebuild_hint(root: Path) -> str:
    """The fix for an index that was never built (or was built for another model or format): right
    from any directory (the output path is absolute; `seeds` only where that folder is)."""
    out = Path(root).absolute()
    if holds_articles(out):  # a folder of articles given as the index: index it into a folder of its own
        return fix_command("index", out, "--out", out.with_name(f"{out.name}-index"))
    if Path("seeds").is_dir():
        return fix_command("index", Path("seeds"), "--out", out)
    return fix_command("index", "FOLDER", "--out", out, note="FOLDER: the folder of your articles")


def repair_hint(root: Path) -> str:
    """The fix for a damaged index: a repair keeps every document it can read back."""
    return fix_command("repair", Path(root))


def install_segment(root: Path, staging: Path) -> Path:
    """Move a finished segment (segment.json written) from staging into segments/."""
    name = json.loads((staging / INFO).read_text())["name"]
    flush_tree(staging)
    target = Path(root) / SEGMENTS / name
    make_folder(target.parent)
    move_into_place(staging, target)
    return target


def publish(root: Path, manifest: dict, tombstones: dict[str, np.ndarray]) -> str:
    """Write a generation (manifest plus tombstones per segment) and switch the pointer to it.

    Segments must already be installed. Call with the build lock held.
    """
    root = Path(root)
    name = new_name("gen")
    staging = new_staging(root, name)
    try:
        (staging / "tombstones").mkdir()
        for segment, dead in tombstones.items():
            if len(dead):
                np.save(staging / "tombstones" / f"{segment}.npy", np.unique(np.asarray(dead, dtype=np.int64)))
        manifest = {**manifest, "format_version": FORMAT_VERSION,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": checksums(staging)}
        # The manifest is written last: a folder without one was never finished.
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        flush_tree(staging)
        move_into_place(staging, root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    switch_pointer(root, name)  # the commit: from here on the change is published
    try:
        remove_unused(root)
    except OSError as exc:  # tidying only; the next publish tries again
        log.warning("published %s, but could not remove old generations: %s", name, exc)
    return name


def switch_pointer(root: Path, name: str) -> None:
    """Point readers at generation name with one atomic rename, flushed before it returns."""
    write_file(Path(root) / POINTER, name + "\n")


def current_generation(root: Path) -> str | None:
    """What the pointer names (checked by verify), or None when there is no pointer."""
    pointer = Path(root) / POINTER
    try:
        return pointer.read_bytes().decode("utf-8", "replace").strip() if pointer.is_file() else None
    except OSError:
        return ""


def generations(root: Path) -> list[str]:
    """Names of the finished generation folders, newest first (names sort by creation time)."""
    root = Path(root)
    return sorted((p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("gen-")),
                  reverse=True) if root.is_dir() else []


def remove_unused(root: Path) -> None:
    """Keep the newest few generations (always the current one) and the segments they use."""
    current = current_generation(root)
    finished = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("gen-"))
    kept = finished[-KEEP_GENERATIONS:] + ([root / current] if current else [])
    for old in finished:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    # Segments are installed and published under the build lock, so one no kept generation
    # uses is garbage (a reader holding it open keeps its files until it closes them).
    used = {s["name"] for g in kept if (manifest := read_manifest(root, g.name)) for s in manifest.get("segments", ())}
    for segment in (root / SEGMENTS).glob("seg-*") if (root / SEGMENTS).is_dir() else ():
        if segment.name not in used:
            shutil.rmtree(segment, ignore_errors=True)


def read_manifest(root: Path, name: str | None = None) -> dict | None:
    name = name or current_generation(root)
    try:
        manifest = json.loads((Path(root) / name / "manifest.json").read_text()) if name else None
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def recorded_manifest(root: Path) -> dict | None:
    """The current generation's manifest, else (the pointer being damaged) the newest readable one:
    what an index records of its model even before a repair."""
    return read_manifest(root) or next(filter(None, (read_manifest(root, g) for g in generations(root))), None)


current_manifest = read_manifest


def verify(root: Path, model: str, dimension: int) -> tuple[str, dict]:
    """Check the current generation's format, model and its own files; returns its name and manifest."""
    root = Path(root)
    name = current_generation(root)
    if name is None and not generations(root):
        raise IndexUnavailable(f"no index found in {root}/", rebuild_hint(root))
    if name is None:
        raise IndexDamaged(f"the index pointer {root / POINTER} is missing", repair_hint(root))
    manifest = read_manifest(root, name) if name.startswith("gen-") and "/" not in name else None
    if manifest is None:
        raise IndexDamaged(f"the index pointer {root / POINTER} names {name[:80]!r}, which is not a generation "
                           "with a readable manifest", repair_hint(root))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexUnavailable(f"index format {manifest.get('format_version')} is not the supported "
                               f"format {FORMAT_VERSION}", rebuild_hint(root))
    built_with = manifest.get("model", {})
    if built_with.get("name") != model or built_with.get("dimension") != dimension:
        raise IndexUnavailable(f"index was built with model {built_with.get('name')} "
                               f"({built_with.get('dimension')} dimensions) but the service uses "
                               f"{model} ({dimension} dimensions)", rebuild_hint(root))
    broken = generation_damage(root, name, manifest)
    if broken is not None:
        raise IndexDamaged(f"index file {broken} in {name} is missing or corrupt (checksum mismatch)",
                           repair_hint(root))
    return name, manifest


def generation_damage(root: Path, name: str, manifest: dict) -> str | None:
    """The first file of generation name (its tombstones) that is missing or corrupt, else None."""
    files = manifest.get("files")
    return "manifest.json" if not isinstance(files, dict) or not isinstance(manifest.get("segments"), list) \
        else first_mismatch(Path(root) / name, files)


def tombstones_of(root: Path, name: str, manifest: dict) -> dict[str, np.ndarray]:
    """Deleted ids of each segment in generation name."""
    folder = Path(root) / name / "tombstones"
    return {s["name"]: rowfile.load(folder / f"{s['name']}.npy") if (folder / f"{s['name']}.npy").is_file()
            else np.zeros(0, np.int64) for s in manifest.get("segments", ())}


def segment_info(root: Path, entry: dict) -> dict:
    """A segment's segment.json, checked against the generation's record of it; raises IndexDamaged."""
    info_path = Path(root) / SEGMENTS / entry["name"] / INFO
    try:
        if sha256_of(info_path) == entry["info_sha256"]:
            return json.loads(info_path.read_text())
    except (OSError, ValueError):
        pass
    raise IndexDamaged(f"index segment {entry['name']} is missing or its {INFO} is corrupt", repair_hint(root))


def check_segment(root: Path, entry: dict) -> dict:
    """A segment's info once every file it lists matches its checksum; raises IndexDamaged naming
    the first that does not."""
    info = segment_info(root, entry)
    broken = first_mismatch(Path(root) / SEGMENTS / entry["name"], info["files"])
    if broken is not None:
        raise IndexDamaged(f"index file {broken} in segment {entry['name']} is missing or corrupt "
                           "(checksum mismatch)", repair_hint(root))
    return info


def open_segment(root: Path, entry: dict, params: DenseParams = DenseParams()) -> Segment:
    """Open one segment after checking its files against its segment.json and the generation;
    raises IndexDamaged naming the first file that is missing, corrupt or unreadable."""
    fix = repair_hint(root)
    folder = Path(root) / SEGMENTS / entry["name"]
    info = check_segment(root, entry)
    try:
        segment = Segment(folder, info, params)
    except Exception as exc:  # a checksum-valid file that still fails to parse is also corruption
        raise IndexDamaged(f"index segment {entry['name']} cannot be read ({exc})", fix) from exc
    if len(segment) != info["passages"]:
        segment.close()
        raise IndexDamaged(f"index segment {entry['name']} is inconsistent: {INFO} says "
                           f"{info['passages']} passages, files hold {len(segment)}", fix)
    return segment


def load(root: Path, model: str, dimension: int, opened: dict | None = None,
         params: DenseParams = DenseParams()):
    """The current generation, ready to search (indexer/engines/faiss/segments.py); see open_index."""
    from indexer.engines.faiss.segments import open_index

    return open_index(Path(root), model, dimension, opened, params)
