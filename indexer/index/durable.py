"""Publishing files so that a power cut cannot undo them: the one owner of fsync and rename.

A renamed file's contents survive a power cut only if the file was flushed before the rename, and
the rename itself only once the folder holding the new name is flushed. Every publish step of the
index goes through here in that order: write a temporary file and flush it, rename it into place,
flush the folder. `ops` holds the system calls, so tests can put a recorder or a fault injector in
their place and check the order (tests/test_durability.py) without cutting any power.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


class Operations:
    """The calls publishing makes; each is a point where a write can fail."""

    def fsync_file(self, path: Path) -> None:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())

    def fsync_dir(self, path: Path) -> None:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def rename(self, source: Path, target: Path) -> None:
        os.rename(source, target)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)


ops = Operations()


def flush_tree(folder: Path) -> None:
    """Flush every file under folder, then every folder in it, itself last."""
    folder = Path(folder)
    folders = [folder]
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            ops.fsync_file(path)
    for each in reversed(folders):
        ops.fsync_dir(each)


def move_into_place(source: Path, target: Path) -> None:
    """Rename a flushed file or folder to target, then flush the folder that now holds it."""
    ops.rename(source, target)
    ops.fsync_dir(Path(target).parent)


def make_folder(folder: Path) -> None:
    """Create folder (and its parents) so that the new entries survive a power cut."""
    folder = Path(folder)
    if folder.is_dir():
        return
    make_folder(folder.parent)
    folder.mkdir(exist_ok=True)
    ops.fsync_dir(folder.parent)


def write_file(path: Path, data: str | bytes) -> None:
    """Replace path whole: written beside it, flushed, renamed over it, its folder flushed."""
    path = Path(path)
    make_folder(path.parent)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        ops.fsync_file(temporary)
        ops.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    ops.fsync_dir(path.parent)
