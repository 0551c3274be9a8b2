"""BM25 keyword scoring with bm25s: English stemming and stopwords, Lucene scoring."""

from __future__ import annotations

from dataclasses import dataclass
import logging
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class KeywordParams:
    """BM25 settings; the defaults reproduce bm25s' published SciFact configuration."""

    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    stopwords: str = "en"
    stemmer: str = "english"


TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s' (and scikit-learn's) default token pattern
NO_TERM = " "  # TOKEN never yields it, so no query matches it


class Analyzer:
    """Text -> terms exactly as bm25s' tokenize does it, reusable per text (for highlights too)."""

    def __init__(self, params: KeywordParams = KeywordParams()) -> None:
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        if params.stopwords != "en" or params.stemmer != "english":
            raise ValueError("only English stopwords and stemming are supported")
        self.stopwords = frozenset(STOPWORDS_EN)
        self.stemmer = Stemmer.Stemmer(params.stemmer)

    def terms(self, text: str) -> list[str]:
        """Lower-cased, stopword-free, stemmed terms of text."""
        words = [w for w in TOKEN.findall(text.lower()) if w not in self.stopwords]
        return self.stemmer.stemWords(words)

    def matches(self, text: str, wanted: set[str]) -> list[tuple[int, str]]:
        """(offset, term) of each word in text whose stem is a wanted term.

        Stemming only changes word endings, so only words that start like a wanted term (first
        three letters) are found and stemmed: this runs on every shown passage at query time.
        """
        if not wanted:
            return []
        found = [(m.start(), m.group()) for m in prefix_pattern(frozenset(t[:3] for t in wanted)).finditer(text.lower())
                 if m.group() not in self.stopwords]
        if not found:
            return []
        stems = self.stemmer.stemWords([word for _, word in found])
        return [(offset, stem) for (offset, _), stem in zip(found, stems) if stem in wanted]


@lru_cache(maxsize=256)
def prefix_pattern(prefixes: frozenset[str]) -> re.Pattern:
    """Words (as TOKEN finds them) that start with one of the prefixes."""
    return re.compile(rf"(?u)\b(?:{'|'.join(sorted(map(re.escape, prefixes)))})\w*\b")


def bm25s_module():
    """bm25s, imported with its logger quieted (it sets itself to DEBUG on import)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def build(texts: Sequence[str], params: KeywordParams = KeywordParams()):
    """A BM25 index over texts, row i scoring texts[i]."""
    retriever = bm25s_module().BM25(method=params.method, k1=params.k1, b=params.b)
    analyzer = Analyzer(params)
    known: dict[str, list[str]] = {}  # passages of one paragraph share their keyword text
    terms = [known[text] if text in known else known.setdefault(text, analyzer.terms(text)) for text in texts]
    if not any(terms):  # bm25s cannot index an empty vocabulary: one term no query can produce
        terms[0] = [NO_TERM]
    retriever.index(terms, show_progress=False)
    return retriever


def save(retriever, folder: Path) -> None:
    """Write bm25s' own named-file format (JSON params and vocab, numpy arrays, no pickle)."""
    retriever.save(str(folder), allow_pickle=False)


def load(folder: Path):
    """Read an index written by save."""
    return bm25s_module().BM25.load(str(folder), allow_pickle=False)


def scores(retriever, terms: list[str]) -> np.ndarray:
    """BM25 score of every row for the query terms (zeros when no term is in the vocabulary)."""
    known = [t for t in terms if t in retriever.vocab_dict]
    if not known:
        return np.zeros(retriever.scores["num_docs"], dtype=np.float32)
    return retriever.get_scores(known)


def idf(retriever, terms: list[str]) -> dict[str, float]:
    """BM25 (Lucene) inverse document frequency of each term; 0 for terms not in the index."""
    n = retriever.scores["num_docs"]
    indptr = retriever.scores["indptr"]
    weights = {}
    for term in terms:
        token = retriever.vocab_dict.get(term)
        df = int(indptr[token + 1] - indptr[token]) if token is not None else 0
        weights[term] = math.log(1 + (n - df + 0.5) / (df + 0.5)) if df else 0.0
    return weights
