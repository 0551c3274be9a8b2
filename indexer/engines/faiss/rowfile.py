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
from functools import lru_cache
from pathlib import Path

import numpy as np

BLOCK_ROWS = 65_536  # rows per read when a caller wants everything (merges, exact scans)
# From this many separate reads, a RowFile reads in one compiled call (read_kernel): one release
# of the GIL instead of one per pread, and each release is a chance for another request's thread
# to take the GIL, i.e. two context switches. A search's 250 exactly rescored vectors: 0.16 ms
# against 0.87 ms; with the batched postings reads, 4 clients on a million passages got 92.7 ->
# 115.8 requests/s (docs/benchmarks.md, "Fewer thread switches per search").
COMPILED_READS_FROM = 32
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
        view = memoryview(out).cast("B")
        done = read_fully(file.fd, view, file.offset)
        if done < len(view):
            raise OSError(f"{path}: file ends {len(view) - done} bytes early")
        return out
    finally:
        file.close()


def read_fully(fd: int, view: memoryview, offset: int) -> int:
    """Fill view from the file at offset; returns the bytes read (fewer only at the file's end)."""
    done = 0
    while done < len(view):  # one read may return less than asked (2 GB at most on Linux)
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done


_pread = None  # libc's pread, for _read_ranges: set by read_kernel before compiling


def _read_ranges(fd, offsets, sizes, out):
    """Numba kernel of RowFile.runs: bytes offsets[i]:offsets[i] + sizes[i] of the file, one
    range after the other into out (uint8); returns the bytes read, short only at the file's end."""
    base = out.ctypes.data
    done = 0
    for i in range(offsets.shape[0]):
        at = 0
        while at < sizes[i]:
            got = _pread(fd, base + done + at, sizes[i] - at, offsets[i] + at)
            if got <= 0:
                return done + at
            at += got
        done += at
    return done


@lru_cache(maxsize=1)
def read_kernel():
    """_read_ranges compiled by numba without the GIL, calling libc's pread by name (so the
    compiled code is cached on disk like the keyword kernel's)."""
    global _pread
    import numba
    from numba import types

    _pread = types.ExternalFunction("pread", types.intp(types.int32, types.voidptr, types.uintp, types.int64))
    return numba.njit(cache=True, nogil=True)(_read_ranges)


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
        starts = unique[np.concatenate([[0], breaks])]
        found = self.runs(starts, np.diff(np.concatenate([[0], breaks, [len(unique)]])))
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        out[order] = found[inverse]
        return out

    def runs(self, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Rows start:start + count of each run (inside the file), one run after the other."""
        starts, counts = np.asarray(starts, dtype=np.int64), np.asarray(counts, dtype=np.int64)
        out = np.empty((int(counts.sum()), *self.row_shape), dtype=self.dtype)
        if not out.size:
            return out
        offsets, sizes = self.offset + starts * self.row_bytes, counts * self.row_bytes
        if len(starts) >= COMPILED_READS_FROM:
            done = read_kernel()(self.fd, offsets, sizes, out.reshape(-1).view(np.uint8))
        else:
            view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
            for offset, size in zip(offsets.tolist(), sizes.tolist()):
                got = read_fully(self.fd, view[done:done + size], offset)
                done += got
                if got < size:
                    break
        if done != out.nbytes:
            raise OSError(f"{self.path}: read {done} of {out.nbytes} bytes: the file is shorter than its "
                          "header says, or unreadable")
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

    def close(self, close=os.close) -> None:  # os.close bound now: __del__ may run at interpreter exit
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()
