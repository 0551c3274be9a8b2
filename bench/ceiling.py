"""How far the shipped evidence can go on the news test half: ceilings, chosen on the test half itself.

    .venv/bin/python bench/ceiling.py [--precision int8-static] [--json bench/results/ceiling.json]

Nothing that ships is fitted or chosen on the test half (bench/relevance.py, bench/late_stage.py
read the fit half and SciFact train). This script reads it on purpose, to say what no choice of
the scorer's weights or of the floor could reach there, however it was chosen: a ceiling, never a
result. On an index of the 28 news articles (built in a scratch folder, at --precision):

- hit@1 by article (the answering passage among the three shown for the first article, as
  `semsearch eval` counts it) and the right article first, for the shipped weights and for the
  best of every direction of (late interaction, cosine, keyword share) on a grid of whole degrees:
  the first 30 passages, the ones the late stage grades, reordered by the direction, the rest
  below them in their order;
- the floor: answers kept (of the test half's questions answered in the first 10) and off-topic
  queries answered with nothing (tests/questions/off_topic.txt, and the held-out set) at the
  shipped floor, at the floor that answers at most 5 % of the off-topic set (midway between the
  off-topic query it must leave out and the next fit-half answer or off-topic score above it), and
  every span of floors at which both targets (kept >= 0.97, nothing >= 0.95) hold on the test half.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.relevance import (HELD_OUT, NEWS, OFF_TOPIC, every_hit, news_searcher,  # noqa: E402
                             off_topic_evidence, question_evidence)
from bench.report import emit  # noqa: E402
from indexer.errors import MORE_PER_ARTICLE  # noqa: E402
from indexer.eval.questions import read_off_topic, read_questions  # noqa: E402
from indexer.model.cpu import read_cpu  # noqa: E402
from indexer.model.embedding import light_model_for  # noqa: E402
from indexer.model.onnx_encoder import PRECISIONS  # noqa: E402
from indexer.search.relevance import (LATE_COLUMNS, answer_relevance, best_relevance, kind_of,  # noqa: E402
                                      relevance_for)

KEPT, NOTHING = 0.97, 0.95  # the targets
SHOWN = 1 + MORE_PER_ARTICLE  # passages shown for an article


def test_half(searcher) -> list[dict]:
    """Each question of the test half: its hits' (late, cosine, keyword share) where the late stage
    graded them (the rest: NaN), their articles, which answer it, its kind."""
    found = []
    for q in read_questions(NEWS / "test.jsonl"):
        hits = every_hit(searcher, q.text)
        found.append({"x": np.array([h.evidence for h in hits], float).reshape(-1, 3)[:, LATE_COLUMNS],
                      "docs": [h.passage.doc_id for h in hits], "right": set(q.doc_ids),
                      "label": np.array([q.answered_by(h) for h in hits], bool), "kind": kind_of(q.text)})
    return found


def led(q: dict, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each column of w (directions of late, cosine, keyword): whether the answering passage is
    among the SHOWN of the first article, and whether that article is the answer's, with the graded
    passages ordered by the direction and the others below them in their order."""
    graded = ~np.isnan(q["x"][:, 0])
    docs, label = np.array(q["docs"]), q["label"]
    if not graded.any():
        return np.full(w.shape[1], bool(label[:SHOWN].any())), np.full(w.shape[1], docs[0] in q["right"])
    score = q["x"][graded] @ w  # (graded passages, directions)
    lead = docs[graded][np.argmax(score, axis=0)]
    hit = np.zeros(w.shape[1], bool)
    for doc in set(docs[graded][label[graded]]) | set(docs[~graded][label[~graded]]):
        mine = docs[graded] == doc
        for row in np.flatnonzero(label[graded] & mine):  # its place among its article's graded passages
            hit |= (lead == doc) & ((score[mine] > score[row]).sum(axis=0) < SHOWN)
        below = np.flatnonzero(label[~graded] & (docs[~graded] == doc))
        if len(below):  # an ungraded answer shows when few enough of its article come before it
            before = mine.sum() + int((docs[~graded][:below[0]] == doc).sum())
            hit |= (lead == doc) & (before < SHOWN)
    return hit, np.isin(lead, list(q["right"]))


def by_article(questions: list[dict], weights) -> tuple[np.ndarray, np.ndarray]:
    """(hit@1 by article, right article first) for each column of weights (or for the weights a
    function gives each question)."""
    hits = [led(q, (weights(q) if callable(weights) else weights).reshape(3, -1)) for q in questions]
    return np.mean([h for h, _ in hits], axis=0), np.mean([f for _, f in hits], axis=0)


def best_direction(questions: list[dict]) -> dict:
    """The best hit@1 by article over every direction of (late, cosine, keyword) in whole degrees
    (ties: the right article first more often)."""
    theta, phi = np.meshgrid(np.radians(np.arange(0, 181)), np.radians(np.arange(0, 360)), indexing="ij")
    w = np.stack([np.cos(theta), np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)]).reshape(3, -1)
    hit, first = by_article(questions, w)
    best = int(np.lexsort((first, hit))[-1])
    return {"hit@1 by article": round(float(hit[best]), 4), "article first": round(float(first[best]), 4),
            "most right articles first, any direction": round(float(first.max()), 4),
            "weights (late, cosine, keyword)": [round(float(v), 3) for v in w[:, best]]}


def floor_figures(floor: float, answers: np.ndarray, off_topic: np.ndarray, held_out: np.ndarray) -> dict:
    return {"floor": round(float(floor), 4), "test half kept": round(float((answers >= floor).mean()), 4),
            "off-topic nothing": round(float((off_topic < floor).mean()), 4),
            "held out nothing": round(float((held_out < floor).mean()), 4)}


def spans_meeting_both(answers: np.ndarray, off_topic: np.ndarray) -> list[list[float]]:
    """The spans of floors (from, to] at which both targets hold: the scores cut the line into
    spans on each of which a floor keeps and leaves out the same hits."""
    scores = np.unique(np.r_[0.0, answers, off_topic, 1.0])
    spans: list[list[float]] = []
    for low, high in zip(scores, scores[1:]):
        if (answers >= high).mean() >= KEPT and (off_topic < high).mean() >= NOTHING:
            if spans and spans[-1][1] == round(float(low), 4):
                spans[-1][1] = round(float(high), 4)  # joins the span before
            else:
                spans.append([round(float(low), 4), round(float(high), 4)])
    return spans


def target_rate_floor(off_topic: np.ndarray, fit_answers: np.ndarray) -> float:
    """The floor that answers at most 1 - NOTHING of the off-topic set: midway between the best
    off-topic score it must leave out and the next score above it (a fit-half answer's or an
    off-topic query's)."""
    ranked = np.sort(off_topic)[::-1]
    edge = ranked[int(np.floor((1 - NOTHING) * len(ranked)))]
    above = np.r_[fit_answers, off_topic]
    above = above[above > edge]
    return float((edge + above.min()) / 2) if len(above) else float(edge + 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=PRECISIONS, default="int8-static")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = light_model_for(None, precision=args.precision)
    params = relevance_for(model.name)[0]
    with tempfile.TemporaryDirectory(prefix="semsearch-ceiling-") as scratch:
        news = news_searcher(Path(scratch), model, params)
        questions = test_half(news)
        answered_test = question_evidence(news, NEWS / "test.jsonl")
        answered_fit = question_evidence(news, NEWS / "fit.jsonl")
        off_topic = best_relevance(params, off_topic_evidence(news, read_off_topic(OFF_TOPIC)))
        held_out = best_relevance(params, off_topic_evidence(news, read_off_topic(HELD_OUT)))

    def shipped(q: dict) -> np.ndarray:
        w = params.late_weights(q["kind"])
        return np.array([w.late, w.cosine, w.keyword])

    hit, first = (round(float(v[0]), 4) for v in by_article(questions, shipped))
    answers, fit_answers = answer_relevance(params, answered_test), answer_relevance(params, answered_fit)
    report = {"cpu": read_cpu().describe(), "model": model.name, "questions": len(questions),
              "kinds": {kind: sum(q["kind"] == kind for q in questions) for kind in ("question", "statement")},
              "answer among the hits": round(float(np.mean([q["label"].any() for q in questions])), 4),
              "shipped weights": {"hit@1 by article": hit, "article first": first},
              "best direction, chosen on the test half": best_direction(questions),
              "answered in the first 10": len(answers), "off-topic queries": len(off_topic),
              "held-out off-topic queries": len(held_out),
              "shipped floor": floor_figures(params.weak, answers, off_topic, held_out),
              "target-rate floor": floor_figures(target_rate_floor(off_topic, fit_answers), answers, off_topic,
                                                 held_out),
              "floors meeting both on the test half": spans_meeting_both(answers, off_topic)}
    emit(report, args.json)


if __name__ == "__main__":
    main()
