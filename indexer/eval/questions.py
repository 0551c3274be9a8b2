"""Check an index against your own questions: hit@1, hit@3 and MRR@10 per retrieval mode.

A question file is JSON Lines, one question a line:

    {"question": "how is Ukraine holding up", "doc_id": "putin-committed-to-war-in-ukraine",
     "answers": ["Ukraine’s resilience has surprised many", "Kyiv remains defiant"]}

A result answers the question when it is a passage of that document containing one of the
answers (exact text, as the article has it). Before scoring, every answer is looked up in its
document, so a question that no passage could ever answer is an error, not a silent miss.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from indexer.text.documents import DocumentError
from indexer.eval.evaluation import mode_table
from indexer.errors import MODES
from indexer.search.searcher import Hit, Query, Searcher

DEPTH = 10  # MRR@10: a question answered below rank 10 counts as unanswered


@dataclass(frozen=True)
class Question:
    line: int
    text: str
    doc_ids: tuple[str, ...]  # any of them answers: the same story from several outlets
    answers: tuple[str, ...]

    @property
    def doc_id(self) -> str:
        return self.doc_ids[0]

    def answered_by(self, hit: Hit) -> bool:
        return hit.passage.doc_id in self.doc_ids and any(a in hit.passage.text for a in self.answers)


def read_questions(path: Path) -> list[Question]:
    """The questions of a file, or a DocumentError naming the line that is wrong and why."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"cannot read the question file {path}: {exc}") from exc
    questions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DocumentError(f"{path}:{number}: expected an object with question, doc_id and answers")
        answers = record.get("answers", record.get("answer"))
        answers = [answers] if isinstance(answers, str) else answers
        text, doc_id = record.get("question"), record.get("doc_id")
        if not (isinstance(text, str) and text.strip()):
            raise DocumentError(f"{path}:{number}: \"question\" must be a non-empty string")
        doc_ids = doc_id if isinstance(doc_id, list) else [doc_id]
        if not (doc_ids and all(isinstance(d, str) and d for d in doc_ids)):
            raise DocumentError(f"{path}:{number}: \"doc_id\" must name the document that answers it (or a list "
                                "of them: the same story from several outlets)")
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)):
            raise DocumentError(f"{path}:{number}: \"answers\" must be a list of texts found in the answering "
                                "passage (or \"answer\": one text)")
        questions.append(Question(number, text, tuple(doc_ids), tuple(answers)))
    if not questions:
        raise DocumentError(f"{path} holds no questions")
    return questions


def read_off_topic(path: Path) -> list[str]:
    """Queries nothing indexed should answer (tests/questions/off_topic.txt): one per line, '#'
    starts a comment."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def check_answerable(searcher: Searcher, questions: list[Question], path: Path) -> None:
    """Every answer must be in some passage of its documents in this index."""
    for q in questions:
        named = " or ".join(repr(d) for d in q.doc_ids)
        for answer in q.answers:
            offset, found = 0, False
            while not found:  # the documents' passages, most like the answer first, a page at a time
                hits = searcher.search(Query(answer, k=100, offset=offset, mode="dense", doc_ids=q.doc_ids,
                                             min_relevance=0))
                if not hits and not offset:
                    raise DocumentError(f"{path}:{q.line}: document {named} is not in the index")
                if not hits:
                    raise DocumentError(f"{path}:{q.line}: no passage of {named} contains {answer!r} "
                                        "(answers must be the article's exact words, within one paragraph)")
                found, offset = any(answer in h.passage.text for h in hits), offset + len(hits)


def first_answer(searcher: Searcher, q: Question, mode: str) -> tuple[Hit | None, Hit | None]:
    """The first result that answers q (None: not in the top DEPTH), and the top hit; the whole
    ranking, nothing left out by relevance."""
    hits = searcher.search(Query(q.text, k=DEPTH, mode=mode, min_relevance=0))
    return next((h for h in hits if q.answered_by(h)), None), (hits[0] if hits else None)


def evaluate_questions(searcher: Searcher, questions: list[Question], path: Path,
                       modes: tuple[str, ...] = MODES) -> dict:
    """hit@1, hit@3 and MRR@10 for each mode, and each question's rank."""
    check_answerable(searcher, questions, path)
    report: dict = {"questions": len(questions), "file": str(path), "results": {}}
    for mode in modes:
        started = time.perf_counter()
        ranks, misses, kept, by_article, article_first = [], [], [], [], []
        for q in questions:
            first_article = searcher.search(Query(q.text, k=1, mode=mode, group="article", min_relevance=0))
            by_article.append(any(q.answered_by(h) for lead in first_article for h in (lead, *lead.more)))
            article_first.append(any(lead.passage.doc_id in q.doc_ids for lead in first_article))
            answer, top = first_answer(searcher, q, mode)
            rank = answer and answer.rank
            ranks.append(rank)
            if rank is not None and rank <= 10:
                kept.append(answer.relevance >= searcher.floor)
            if rank != 1:
                misses.append({"line": q.line, "question": q.text, "doc_id": q.doc_id, "rank": rank,
                               "top": None if top is None else {"doc_id": top.passage.doc_id,
                                                                "text": top.passage.text[:160]}})
        n = len(questions)
        counts = {  # (how many, of how many)
            "hit@1": (sum(r == 1 for r in ranks), n),
            "hit@3": (sum(r is not None and r <= 3 for r in ranks), n),
            # group=article: the answer among the passages shown for the first article
            "article_hit@1": (sum(by_article), n),
            # group=article: the first article is the answer's, whichever of its passages it shows
            "article_first": (sum(article_first), n),
            # Of the questions answered in the first 10, the share whose answer reaches the default
            # min_relevance (so a search with the default floor still shows it).
            "kept": (sum(kept), len(kept)),
        }
        report["results"][mode] = {
            **{name: round(k / of, 4) if of else 0.0 for name, (k, of) in counts.items()},
            "mrr@10": round(sum(1 / r for r in ranks if r) / n, 4),
            "answered_in_10": len(kept),
            "intervals": {name: interval(k, of) for name, (k, of) in counts.items() if of},
            "seconds": round(time.perf_counter() - started, 2),
            "misses": misses,
        }
    return report


def interval(k: int, n: int) -> list[float]:
    """The 95 % Wilson interval of a share k of n: where the share over all such questions likely
    lies, given these n. A difference between two runs well inside it is one the questions cannot
    tell apart."""
    from scipy.stats import binomtest

    found = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(found.low), 3), round(float(found.high), 3)]


LABELS = {"hit@1": "hit@1", "hit@3": "hit@3", "mrr@10": "MRR@10", "article_hit@1": "hit@1 by article",
          "article_first": "article first", "kept": "answer kept"}


def format_report(report: dict) -> str:
    """A Markdown table of the figures, the first mode's shares with their 95 % intervals (how far
    the question set can be trusted), then the questions that mode did not answer at rank 1."""
    lines = mode_table(f"{report['file']} ({report['questions']} questions)", report["results"], LABELS)
    mode, values = next(iter(report["results"].items()))
    spans = [f"{LABELS[name]} {low:.3f}-{high:.3f}" for name, (low, high) in values["intervals"].items()]
    lines += ["", f"95 % intervals ({mode}; Wilson, {report['questions']} questions, answer kept of the "
              f"{values['answered_in_10']} answered in the first {DEPTH}): " + ", ".join(spans)]
    if values["misses"]:
        lines += ["", f"not answered first ({mode}):"]
        for miss in values["misses"]:
            where = f"rank {miss['rank']}" if miss["rank"] else f"not in the top {DEPTH}"
            top = miss["top"]
            shown = f"{top['doc_id']}: {' '.join(top['text'].split())[:100]}" if top else "no results"
            lines.append(f"  line {miss['line']}: {miss['question']!r} ({where}); first: {shown}")
    return "\n".join(lines)
