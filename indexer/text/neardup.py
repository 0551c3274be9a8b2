"""Near-duplicate passages, as syndicated copies of one story are: a MinHash signature of each
passage's word 3-shingles, computed at index time and kept per row (PERMUTATIONS x 4 bytes).
The share of equal signature values estimates the Jaccard similarity of two passages' shingles;
at SAME_STORY or more they are one text give or take a dateline, a sentence or a few words.
(A 64-bit SimHash was tried first: on passages of a few dozen words an edited copy and a
different story on the same subject land equally near.)"""

from __future__ import annotations

import re
import zlib

import numpy as np

WORD = re.compile(r"\w+")
PERMUTATIONS = 32
SAME_STORY = 0.5
EMPTY = np.uint32(0xFFFFFFFF)  # a passage without words: never anyone's duplicate
# Multiply-shift hashing: (a * x + b) >> 32 over 64-bit words, a odd; fixed, so signatures of
# every build compare.
_draw = np.random.default_rng(20261127)
MULTIPLIERS = (_draw.integers(0, 2**63, PERMUTATIONS, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
OFFSETS = _draw.integers(0, 2**63, PERMUTATIONS, dtype=np.uint64)


def signature(text: str) -> np.ndarray:
    """PERMUTATIONS uint32 minima over text's lowercase word 3-shingles."""
    words = WORD.findall(text.lower())
    if not words:
        return np.full(PERMUTATIONS, EMPTY, dtype=np.uint32)
    shingles = np.array([zlib.crc32(" ".join(words[i:i + 3]).encode()) for i in range(max(len(words) - 2, 1))],
                        dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = (shingles[:, None] * MULTIPLIERS + OFFSETS) >> np.uint64(32)
    return mixed.min(axis=0).astype(np.uint32)


def signatures(texts: list[str]) -> np.ndarray:
    """(len(texts), PERMUTATIONS) uint32."""
    return np.array([signature(t) for t in texts], dtype=np.uint32).reshape(len(texts), PERMUTATIONS)


def stories(ranked_ids: list[int], marks: np.ndarray, documents: dict[int, int]) -> dict[int, list[int]]:
    """Group ranked passages into stories: each joins the first better-ranked story leader of
    another document whose signature agrees on at least SAME_STORY of its values, else leads a
    story of its own. Returns {leader id: [the others of its story, best first]}, in rank order."""
    groups: dict[int, list[int]] = {}
    leaders: list[int] = []
    leader_marks = np.zeros((len(ranked_ids), PERMUTATIONS), dtype=np.uint32)
    for passage_id, mark in zip(ranked_ids, marks):
        if leaders and not (mark == EMPTY).all():
            close = np.flatnonzero((leader_marks[:len(leaders)] == mark).mean(axis=1) >= SAME_STORY)
            home = next((leaders[c] for c in close if documents.get(leaders[c]) != documents.get(passage_id)), None)
            if home is not None:
                groups[home].append(passage_id)
                continue
        leader_marks[len(leaders)] = mark
        leaders.append(passage_id)
        groups[passage_id] = []
    return groups
