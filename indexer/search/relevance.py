"""Relevance: one score in [0, 1] that orders hybrid results, grades them and decides "no good match".

    relevance = sigmoid(bias + cosine_weight * cosine + keyword_weight * keyword)

and, for the first SEMSEARCH_LATE_DEPTH passages by it (30), when the index keeps word pieces:

    relevance = sigmoid(late_bias + late_weight * late + late_keyword_weight * keyword)

cosine: the passage's dense similarity to the query; keyword: the share of the query's keyword
weight it holds (its BM25 score over the sum of the query terms' idf); late: its late-interaction
score (indexer/model/pieces.py), which tells the paragraph that holds the answer from its
siblings far better than one pooled vector does (docs/benchmarks.md). The passages after the
first SEMSEARCH_LATE_DEPTH keep the first relevance, scaled below the lowest rescored one (in their
order), so relevance never rises down a ranking. Cosines differ from model
to model, so the weights belong to a model: the packaged model's ship in relevance.json beside
this file (fitted by bench/relevance.py --fit on SciFact train's and the news questions' fit half's
answers against off-topic queries);
`semsearch calibrate` fits them for another model or a corpus of one's own from a question file
and an off-topic file, and keeps them in the index folder (CALIBRATION), where they take the
place of the shipped ones. Without fitted weights a hit's relevance still orders the results, but
it means nothing absolute: no floor applies, so "no good match" is never said, and /readyz, the
log and the page say that the relevance is not fitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

SHIPPED = Path(__file__).with_name("relevance.json")
CALIBRATION = "relevance.json"  # in the index folder: written by `semsearch calibrate`
FIT_DEPTH = 10  # a question counts as answered when its answer is in the first 10


@dataclass(frozen=True)
class RelevanceParams:
    """The weights of the relevance and the grades' thresholds: a hit's `match` is strong from
    `strong`, weak from `weak` (the default min_relevance), else none. fitted: where the weights
    were fitted ("packaged" or the calibration file); None: not fitted for this model (the
    packaged model's weights stand in for ordering, and no floor applies)."""

    bias: float = -7.11
    cosine_weight: float = 16.28
    keyword_weight: float = 7.57
    strong: float = 0.5
    weak: float = 0.1
    fitted: str | None = None
    # The late stage (None: off, as for weights fitted before it, which grade without it).
    late_bias: float | None = -10.69
    late_weight: float | None = 17.92
    late_keyword_weight: float | None = 6.9

    def of(self, cosines: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.bias + self.cosine_weight * cosines + self.keyword_weight * shares)))

    @property
    def late(self) -> bool:
        return self.late_weight is not None

    def of_late(self, lates: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.late_bias + self.late_weight * lates + self.late_keyword_weight * shares)))

    @property
    def floor(self) -> float:
        """The default min_relevance: the weak grade's when fitted, else 0 (every hit kept)."""
        return self.weak if self.fitted else 0.0

    def record(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "fitted" and value is not None}


def base_name(model: str) -> str:
    """A model's name without its precision (weights hold at every precision of one model)."""
    return model.split("@")[0]


def read_params(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as relevance weights ({exc})") from exc
    if not isinstance(found, dict):
        raise ValueError(f"{path} cannot be read as relevance weights (not a JSON object)")
    return found


LATE = ("late_bias", "late_weight", "late_keyword_weight")
NO_LATE = dict.fromkeys(LATE)


def weights_from(found: object, fitted: str) -> RelevanceParams:
    """Weights as a file keeps them; a file without the late stage's (fitted before it) grades
    without it."""
    names = [key for key in asdict(RelevanceParams()) if key != "fitted" and key not in LATE]
    late = isinstance(found, dict) and any(n in found for n in LATE)
    names += LATE if late else []  # all three or none
    if not isinstance(found, dict) or not all(isinstance(found.get(n), (int, float)) and math.isfinite(found[n])
                                              for n in names):
        raise ValueError(f"{fitted}: relevance weights need numbers {', '.join(names)}")
    return RelevanceParams(**{**({} if late else NO_LATE), **{n: float(found[n]) for n in names}}, fitted=fitted)


def relevance_for(model: str, index: Path | None = None) -> tuple[RelevanceParams, str | None]:
    """The weights for searching an index with this model, and a warning when a calibration in
    the index folder could not be used: the index's own calibration for this model, else the
    shipped weights for it, else the packaged model's unfitted (fitted=None)."""
    warning = None
    if index is not None and (Path(index) / CALIBRATION).is_file():
        path = Path(index) / CALIBRATION
        try:
            found = read_params(path)
            if base_name(str(found.get("model", ""))) != base_name(model):
                raise ValueError(f"{path} was fitted for the model {found.get('model')!r}, not {base_name(model)!r}")
            return weights_from(found, str(path)), None
        except ValueError as exc:
            warning = f"{exc}; using the shipped weights (refit with `semsearch calibrate`)"
    shipped = read_params(SHIPPED)
    if base_name(model) in shipped:
        return weights_from(shipped[base_name(model)], "packaged"), warning
    return RelevanceParams(), warning


def not_fitted_notice(model: str) -> str:
    return (f"relevance is not fitted for the model {base_name(model)}: results are ordered, but weak and "
            f"off-topic hits are shown and \"no good match\" is never said; fit it with `semsearch calibrate`")


def logistic(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, ...]:
    """(bias, weight of each column) of a logistic regression of positives against negatives,
    the two classes weighted equally."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([positives, negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    model = LogisticRegression(class_weight="balanced", C=10.0).fit(x, y)
    return round(float(model.intercept_[0]), 2), *(round(float(w), 2) for w in model.coef_[0])


def fit(positives: np.ndarray, negatives: np.ndarray, params: RelevanceParams) -> RelevanceParams:
    """The first stage: answers' (cosine, keyword share) against off-topic hits'. With a third
    column (late interaction; NaN where a hit was not graded again), the late stage too, from the
    rows that have it: (late, keyword share)."""
    positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
    bias, cosine, keyword = logistic(positives[:, :2], negatives[:, :2])
    params = replace(params, bias=bias, cosine_weight=cosine, keyword_weight=keyword)
    if positives.shape[1] < 3:
        return params
    late_p, late_n = positives[~np.isnan(positives[:, 2])], negatives[~np.isnan(negatives[:, 2])]
    if len(late_p) < 2 or not len(late_n):
        return replace(params, **NO_LATE)
    bias, late, keyword = logistic(late_p[:, [2, 1]], late_n[:, [2, 1]])
    return replace(params, late_bias=bias, late_weight=late, late_keyword_weight=keyword)


def shown(params: RelevanceParams, rows: np.ndarray) -> np.ndarray:
    """The relevance of hits with evidence rows (cosine, keyword share[, late]) as a search shows
    it: the late stage's where a hit was graded again, else the first, scaled below the lowest of those."""
    rows = np.asarray(rows, float)
    first = params.of(rows[:, 0], rows[:, 1])
    again = ~np.isnan(rows[:, 2]) if rows.shape[1] >= 3 and params.late else np.zeros(len(rows), bool)
    if again.any():
        first[again] = params.of_late(rows[again, 2], rows[again, 1])
        first[~again] = below(first[~again], float(first[again].min()))
    return first


def below(relevance: np.ndarray, lowest: float) -> np.ndarray:
    """Relevances scaled (when they must be) so none is above lowest, in the same order."""
    top = float(relevance.max()) if len(relevance) else 0.0
    return relevance * (lowest / top) if top > lowest else relevance


def with_floor(params: RelevanceParams, answers: np.ndarray, off_topic: np.ndarray) -> RelevanceParams:
    """The weak grade's floor that best tells the answers from the off-topic queries' best hits
    (most of both on the right side; midway between the two closest scores either side of it),
    and the strong grade no lower than it."""
    scores = np.unique(np.r_[answers, off_topic, 0.0])
    right = [(answers >= t).mean() + (off_topic < t).mean() for t in scores]
    at = int(np.argmax(right))
    floor = float(scores[at] + scores[at - 1]) / 2 if at else float(scores[at])
    weak = round(min(max(floor, 0.001), 0.999), 3)
    return replace(params, weak=weak, strong=round(max(params.strong, weak), 3))


@dataclass(frozen=True)
class Calibration:
    """What `semsearch calibrate` found: the weights, and how they do on the files they came from."""

    params: RelevanceParams
    questions: int
    answered: int           # questions whose answer is in the first FIT_DEPTH (the positives)
    off_topic: int
    kept: float             # share of those answers at or above the weak floor
    nothing: float          # share of off-topic queries with no hit at or above it
    before: tuple[float, float] | None  # (kept, nothing) with the weights used before

    def lines(self) -> list[str]:
        p = self.params
        said = [f"fitted on {self.answered} of {self.questions} questions (answer in the first {FIT_DEPTH}) "
                f"and {self.off_topic} off-topic queries",
                f"weights: bias {p.bias:g}, cosine {p.cosine_weight:g}, keyword {p.keyword_weight:g}"
                + (f"; late interaction: bias {p.late_bias:g}, late {p.late_weight:g}, keyword {p.late_keyword_weight:g}"
                   if p.late else "") + f"; floor {p.weak:g}",
                f"answers kept: {self.kept:.1%}; off-topic queries answered with nothing: {self.nothing:.1%}"]
        if self.before is not None:
            said.append(f"with the weights before: answers kept {self.before[0]:.1%}, off-topic answered with "
                        f"nothing {self.before[1]:.1%}")
        return said


def calibrate(searcher, questions: list, off_topic: list[str]) -> Calibration:
    """Fit the relevance weights on an index: each question's answering passage (when in the
    first FIT_DEPTH of the hybrid list) against each off-topic query's best hit."""
    from indexer.search.searcher import Query

    if not questions or not off_topic:
        raise ValueError("calibrating needs at least one question and one off-topic query")

    before = searcher.relevance
    if not before.late:  # weights fitted before late interaction: its stage is fitted too
        searcher.relevance = replace(before, **{n: getattr(RelevanceParams(), n) for n in LATE})

    def evidence(text: str) -> list:
        return searcher.search(Query(text, k=200, min_relevance=0))

    try:
        return calibrated(evidence, questions, off_topic, before)
    finally:
        searcher.relevance = before


def calibrated(evidence, questions: list, off_topic: list[str], before: RelevanceParams) -> Calibration:
    """calibrate() on evidence(text), a search's hits with their evidence."""
    answers = []
    for q in questions:
        hit = next((h for h in evidence(q.text)[:FIT_DEPTH] if q.answered_by(h)), None)
        if hit is not None:
            answers.append(hit.evidence)
    if len(answers) < 2:
        raise ValueError(f"only {len(answers)} of {len(questions)} questions have their answer in the first "
                         f"{FIT_DEPTH}: check that the questions' doc_ids and answers match this index")
    positives = np.array(answers, float)
    per_query = [np.array([h.evidence for h in evidence(text)], float).reshape(-1, 3) for text in off_topic]
    best = np.array([rows[np.argmax(shown(before, rows))] for rows in per_query if len(rows)])
    if not len(best):
        best = np.full((1, 3), np.nan)
        best[0, :2] = 0.0
    params = fit(positives, best, replace(before, fitted="calibrated"))
    params = with_floor(params, shown(params, positives),
                        np.array([shown(params, rows).max() if len(rows) else 0.0 for rows in per_query]))

    def figures(p: RelevanceParams) -> tuple[float, float]:
        kept = float((shown(p, positives) >= p.weak).mean())
        nothing = float(np.mean([not len(rows) or shown(p, rows).max() < p.weak for rows in per_query]))
        return kept, nothing

    kept, nothing = figures(params)
    return Calibration(params, len(questions), len(answers), len(off_topic), kept, nothing,
                       figures(before) if before.fitted else None)


def save(calibration: Calibration, index: Path, model: str, questions: Path, off_topic: Path) -> Path:
    """Write the weights into the index folder (atomically), where searches of it find them."""
    from indexer.index.durable import write_file

    path = Path(index) / CALIBRATION
    record = {"model": base_name(model), **calibration.params.record(),
              "fitted_on": {"questions": str(questions), "off_topic": str(off_topic),
                            "answered": calibration.answered, "off_topic_queries": calibration.off_topic},
              "answers_kept": round(calibration.kept, 4), "off_topic_nothing": round(calibration.nothing, 4)}
    write_file(path, (json.dumps(record, indent=2) + "\n").encode())
    return path
