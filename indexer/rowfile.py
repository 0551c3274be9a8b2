"""Rows of a .npy file read on demand with pread: the process holds only what a query asked for.

Memory-mapping would be simpler, but on this kernel a fault maps the whole cached folio around
it: on 100,000 passages, 1,000 reads of 4 random rows left all 255 MB of sentence vectors
resident, with or without MADV_RANDOM. pread copies just the bytes asked for (from the page
cache, which the OS may drop), and costs a couple of microseconds a call.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

BLOCK_ROWS = 65_536  # rows per read when a caller wants everything (merges, exact scans)
# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 builds ASTs in state shared by
# all threads: a merge thread and a request thread opening arrays at once failed with "SystemError:
# AST constructor recursion depth mismatch" (CPython gh-106905; found by fuzzing ingests). Every
# header is read under this lock, and nothing here calls np.load.
HEADER_LOCK = threading.Lock()


def load(path: Path) -> np.ndarray:
    """A whole .npy array in memory (np.load, minus its unlocked header parse)."""
    file = RowFile(path)
    try:
        out = np.empty(file.shape, dtype=file.dtype)
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):  # one read may return less than asked (2 GB at most on Linux)
            got = os.preadv(file.fd, [view[done:]], file.offset + done)
            if got <= 0:
                raise OSError(f"{path}: file ends {len(view) - done} bytes early")
            done += got
        return out
    finally:
        file.close()


class RowFile:
    """A read-only 1-D or 2-D .npy array whose rows are read with pread."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            with HEADER_LOCK:
                self.shape, fortran, self.dtype = reader(handle)
            self.offset = handle.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
        self.path = Path(path)
        self.row_shape = tuple(self.shape[1:])
        self.row_bytes = self.dtype.itemsize * math.prod(self.row_shape)
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop (clipped to the file)."""
        start, stop = max(0, start), min(len(self), stop)
        count = max(0, stop - start)
        data = os.pread(self.fd, count * self.row_bytes, self.offset + start * self.row_bytes) if count else b""
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.row_shape))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, in the given order; consecutive rows are read together."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"row out of range for {self.path.name} ({len(self)} rows)")
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        unique, inverse = np.unique(wanted, return_inverse=True)
        breaks = np.flatnonzero(np.diff(unique) > 1) + 1
        starts = unique[np.concatenate([[0], breaks])].tolist()
        counts = np.diff(np.concatenate([[0], breaks, [len(unique)]])).tolist()
        size, offset, fd = self.row_bytes, self.offset, self.fd
        # One pread per run of consecutive rows, joined once: this runs for every query's candidates.
        data = b"".join([os.pread(fd, n * size, offset + start * size) for start, n in zip(starts, counts)])
        found = np.frombuffer(data, dtype=self.dtype).reshape((len(unique), *self.row_shape))
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        out[order] = found[inverse]
        return out

    def all(self) -> np.ndarray:
        return self.read(0, len(self))

    def blocks(self):
        """(first row, rows) over the whole file, BLOCK_ROWS at a time."""
        for first in range(0, len(self), BLOCK_ROWS):
            yield first, self.read(first, first + BLOCK_ROWS)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self.read(start, stop)[::step] if step != 1 else self.read(start, stop)
        if isinstance(key, (int, np.integer)):
            return self.read(int(key), int(key) + 1)[0]
        return self.take(np.asarray(key))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.all()
        return whole if dtype is None else whole.astype(dtype)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()
