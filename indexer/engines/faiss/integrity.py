"""Checksums of index files, written when a folder is finished and checked when it is opened."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under folder, by relative path."""
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def first_mismatch(folder: Path, expected: dict[str, str]) -> str | None:
    """The first recorded file that is missing or whose checksum differs; None when all match."""
    for relative, digest in expected.items():
        path = folder / relative
        if not path.is_file() or sha256_of(path) != digest:
            return relative
    return None
