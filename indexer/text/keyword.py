"""The keyword analyzer (English stemming and stopwords, exactly as bm25s tokenizes) and bm25s
itself, kept as the oracle the tests compare indexer/engines/faiss/postings.py's BM25 with."""

from __future__ import annotations

import bisect
import functools
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
PIECE_WORD = re.compile(r"(?u)\w+(?:['’]\w+)*")  # a word with its contraction, as a model's pieces cover it
# Contractions read as the words they stand for, in passages and queries alike: "won't" is "will
# not" (the token pattern made it "won", the verb), "doesn't" is "does not", and the endings 're,
# 've, 'll, 'd, 'm and 's (a possessive or "is") are left out (they became tokens like "re" and
# "ll"). "not" is a stopword, so a negation is no term on either side.
CONTRACTION = re.compile(r"(?u)\b(\w+?)(n['’]t|['’](?:re|ve|ll|d|m|s))\b")
IRREGULAR = {"wo": "will", "ca": "can", "sha": "shall", "ai": "is"}  # won't, can't, shan't, ain't
# Words that make a question a question, not what it is about: left out of a query's terms (the
# index keeps them), so "how many casualties" is not matched on "many". Only when the query has
# other terms: "what is it" still searches for something. "why" stays a term: news headings ask
# it ("Why the bridge has to close") and matching them helped on tests/questions.
QUESTION_WORDS = frozenset(
    "how what which who whom whose when where whether do does did done doing can could would should "
    "shall may might must has have had having am were been being i me my mine we us our you your he him "
    "his she her its them there here about much many any some get gets got tell told know".split())


class Analyzer:
    """Text -> terms exactly as bm25s' tokenize does it, reusable per text (for highlights too)."""

    def __init__(self, params: KeywordParams = KeywordParams()) -> None:
        import Stemmer

        if params.stopwords != "en" or params.stemmer != "english":
            raise ValueError("only English stopwords and stemming are supported")
        self.stopwords = english_stopwords()
        self.stemmer = Stemmer.Stemmer(params.stemmer)

    def terms(self, text: str) -> list[str]:
        """Lower-cased, stopword-free, stemmed terms of text."""
        words = [w for w in TOKEN.findall(expanded(text.lower())) if w not in self.stopwords]
        return self.stemmer.stemWords(words)

    def query_terms(self, text: str) -> list[str]:
        """A query's terms: terms() without QUESTION_WORDS, unless nothing else is left."""
        words = [w for w in TOKEN.findall(expanded(text.lower())) if w not in self.stopwords]
        kept = [w for w in words if w not in QUESTION_WORDS]
        return self.stemmer.stemWords(kept or words)

    def piece_terms(self, text: str, spans: list[tuple[int, int]]) -> list[list[str]]:
        """For each (start, end) of text (a model's word piece), the terms of the word it is part of:
        none for a stopword or punctuation, question words kept (as terms() analyses)."""
        words = [(m.start(), m.end()) for m in PIECE_WORD.finditer(text)]
        starts = [start for start, _ in words]
        terms: dict[int, list[str]] = {}
        found = []
        for start, end in spans:
            at = bisect.bisect_right(starts, start) - 1
            inside = at >= 0 and words[at][0] <= start < words[at][1]
            if inside and at not in terms:
                terms[at] = self.terms(text[words[at][0]:words[at][1]])
            found.append(terms[at] if inside else [])
        return found

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


def expanded(text: str) -> str:
    """text with its contractions spelled out (see CONTRACTION)."""

    def spelled(match: re.Match) -> str:
        word, ending = match.group(1), match.group(2)
        return f"{IRREGULAR.get(word, word)} not" if ending[0] == "n" else word

    return CONTRACTION.sub(spelled, text) if "'" in text or "’" in text else text


@lru_cache(maxsize=256)
def prefix_pattern(prefixes: frozenset[str]) -> re.Pattern:
    """Words (as TOKEN finds them) that start with one of the prefixes; never the head of a
    contraction ("won" in "won't")."""
    return re.compile(rf"(?u)\b(?:{'|'.join(sorted(map(re.escape, prefixes)))})\w*\b(?!['’]t\b)")


@functools.cache
def english_stopwords() -> frozenset[str]:
    """bm25s' English stopwords, read from its stopwords module alone: importing it the usual way
    runs bm25s' package start-up (numba, scipy), 0.3-0.6 s of a one-off terminal search."""
    import importlib.util

    package = importlib.util.find_spec("bm25s")
    spec = importlib.util.spec_from_file_location("_bm25s_stopwords",
                                                  Path(package.submodule_search_locations[0]) / "stopwords.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.STOPWORDS_EN)


def bm25s_module():
    """bm25s, imported with its logger quieted (it sets itself to DEBUG on import)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def scores(retriever, terms: list[str]) -> np.ndarray:
    """bm25s' score of every row for the query terms (zeros when no term is in its vocabulary)."""
    known = [t for t in terms if t in retriever.vocab_dict]
    if not known:
        return np.zeros(retriever.scores["num_docs"], dtype=np.float32)
    return retriever.get_scores(known)


def idf(df: int, total: int) -> float:
    """Lucene's BM25 inverse document frequency; 0 for a term that occurs nowhere."""
    return math.log1p((total - df + 0.5) / (df + 0.5)) if df > 0 else 0.0


def bm25(query: list[str], passage: list[str], weights: dict[str, float], average_length: float,
         params: KeywordParams) -> float:
    """One passage's BM25 score (Lucene's, as the FAISS engine's postings compute it): the sum over
    query terms, repeats counted again, of idf * tf / (tf + k1 * (1 - b + b * length / average))."""
    norm = params.k1 * (1 - params.b + params.b * len(passage) / max(average_length, 1e-9))
    score = 0.0
    for term in query:
        tf = passage.count(term) if weights.get(term) else 0
        if tf:
            score += weights[term] * tf / (tf + norm)
    return score


def passage_terms(passages) -> list[list[str]]:
    """What BM25 scores for each passage: its own text counted twice, its title and section (the
    context the model sees too), and, once, the pieces just before and after it when its
    paragraph was cut for the model's window (a query whose words straddle the cut still finds
    it). Never the whole paragraph: its pieces then all tied for a word only one of them holds,
    and the paragraph's length pushed every piece down (a 1,000-word one-paragraph article was
    not found by its own first words)."""
    from indexer.text.chunking import context_of

    analyzer = Analyzer()
    texts = []
    for i, p in enumerate(passages):
        same = [q.text for q in (passages[i - 1] if i else None, passages[i + 1] if i + 1 < len(passages) else None)
                if q is not None and (q.doc_id, q.paragraph) == (p.doc_id, p.paragraph)]
        texts.append("\n".join([context_of(p.title, p.section), p.text, p.text, *same]))
    known: dict[str, list[str]] = {}  # passages with the same text (a repeated line) analyzed once
    return [known[t] if t in known else known.setdefault(t, analyzer.terms(t)) for t in texts]
