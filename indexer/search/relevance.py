"""Relevance: one score in [0, 1] that orders hybrid results, grades them and decides "no good match".

    relevance = sigmoid(bias + cosine_weight * cosine + keyword_weight * keyword)

cosine: the passage's dense similarity to the query; keyword: the share of the query's keyword
weight it holds (its BM25 score over the sum of the query terms' idf). Cosines differ from model
to model, so the weights belong to a model: the packaged model's ship in relevance.json beside
this file (fitted by bench/relevance.py --fit on SciFact train against off-topic queries);
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

    bias: float = -8.18
    cosine_weight: float = 17.16
    keyword_weight: float = 8.62
    strong: float = 0.5
    weak: float = 0.1
    fitted: str | None = None

    def of(self, cosines: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.bias + self.cosine_weight * cosines + self.keyword_weight * shares)))

    @property
    def floor(self) -> float:
        """The default min_relevance: the weak grade's when fitted, else 0 (every hit kept)."""
        return self.weak if self.fitted else 0.0

    def record(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "fitted"}


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


def weights_from(found: object, fitted: str) -> RelevanceParams:
    names = [key for key in asdict(RelevanceParams()) if key != "fitted"]
    if not isinstance(found, dict) or not all(isinstance(found.get(n), (int, float)) and math.isfinite(found[n])
                                              for n in names):
        raise ValueError(f"{fitted}: relevance weights need numbers {', '.join(names)}")
    return RelevanceParams(**{n: float(found[n]) for n in names}, fitted=fitted)


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


def fit(positives: np.ndarray, negatives: np.ndarray, params: RelevanceParams) -> RelevanceParams:
    """A logistic regression of answers' (cosine, keyword share) against off-topic hits', the two
    classes weighted equally."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([positives, negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    model = LogisticRegression(class_weight="balanced", C=10.0).fit(x, y)
    return replace(params, bias=round(float(model.intercept_[0]), 2), cosine_weight=round(float(model.coef_[0, 0]), 2),
                   keyword_weight=round(float(model.coef_[0, 1]), 2))


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
                f"weights: bias {p.bias:g}, cosine {p.cosine_weight:g}, keyword {p.keyword_weight:g}; floor {p.weak:g}",
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

    def evidence(text: str) -> list:
        return searcher.search(Query(text, k=200, min_relevance=0))

    answers = []
    for q in questions:
        hit = next((h for h in evidence(q.text)[:FIT_DEPTH] if q.answered_by(h)), None)
        if hit is not None:
            answers.append(hit.evidence)
    if len(answers) < 2:
        raise ValueError(f"only {len(answers)} of {len(questions)} questions have their answer in the first "
                         f"{FIT_DEPTH}: check that the questions' doc_ids and answers match this index")
    positives = np.array(answers)
    per_query = [np.array([h.evidence for h in evidence(text)]).reshape(-1, 2) for text in off_topic]
    before = searcher.relevance
    best = np.array([rows[np.argmax(before.of(rows[:, 0], rows[:, 1]))] for rows in per_query if len(rows)])
    if not len(best):
        best = np.zeros((1, 2))
    params = fit(positives, best, replace(before, fitted="calibrated"))
    params = with_floor(params, params.of(positives[:, 0], positives[:, 1]),
                        np.array([params.of(rows[:, 0], rows[:, 1]).max() if len(rows) else 0.0 for rows in per_query]))

    def figures(p: RelevanceParams) -> tuple[float, float]:
        kept = float((p.of(positives[:, 0], positives[:, 1]) >= p.weak).mean())
        nothing = float(np.mean([not len(rows) or p.of(rows[:, 0], rows[:, 1]).max() < p.weak for rows in per_query]))
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
