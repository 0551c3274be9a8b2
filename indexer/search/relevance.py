"""Relevance: one score in [0, 1] that orders hybrid results, grades them and decides "no good match".

    relevance = sigmoid(bias + cosine_weight * cosine + keyword_weight * keyword)

and, for the first SEMSEARCH_LATE_DEPTH passages by it (30), when the index keeps word pieces, with
the weights of the query's kind (a question or a few keywords; or a statement, a claim: kind_of):

    relevance = sigmoid(late.bias + late.late * late + late.cosine * cosine + late.keyword * keyword)

cosine: the passage's dense similarity to the query; keyword: the share of the query's keyword
weight it holds (its BM25 score over the sum of the query terms' idf); late: its late-interaction
score (indexer/model/pieces.py), which tells the paragraph that holds the answer from its
siblings far better than one pooled vector does (docs/benchmarks.md). A question leans on late
interaction, a claim on the passage's cosine and keywords: one set of weights for both put either
the news questions' answers or SciFact's claims' articles first less often. The passages after the
first SEMSEARCH_LATE_DEPTH keep the first relevance, scaled below the lowest rescored one (in their
order), so relevance never rises down a ranking. Cosines differ from model
to model, so the weights belong to a model: the packaged model's ship in relevance.json beside
this file, at fp32 and at int8-static (shipped_name; fitted by bench/relevance.py --fit on SciFact
train's and the news questions' fit half's answers against their other hits and off-topic queries);
`semsearch calibrate` fits them for another model or a corpus of one's own from a question file
and an off-topic file, and keeps them in the index folder (CALIBRATION), where they take the
place of the shipped ones. Without fitted weights a hit's relevance still orders the results, but
it means nothing absolute: no floor applies, so "no good match" is never said, and /readyz, the
log and the page say that the relevance is not fitted.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

SHIPPED = Path(__file__).with_name("relevance.json")
CALIBRATION = "relevance.json"  # in the index folder: written by `semsearch calibrate`
FIT_DEPTH = 10  # a question counts as answered when its answer is in the first 10
KINDS = ("question", "statement")
# A query asks a question when it starts with one of these (after a preposition for the wh-words:
# "on how many days") or ends with "?".
WH_WORDS = frozenset("why what who whom whose when where which how whats whos".split())
QUESTION_WORDS = WH_WORDS | frozenset(
    "is are was were am do does did can could will would should shall may might must has have had isn't aren't "
    "wasn't weren't don't doesn't didn't can't couldn't won't wouldn't shouldn't hasn't haven't hadn't".split())
PREPOSITIONS = frozenset("on in at by for from to of with about since until after before during".split())
STATEMENT_WORDS = 5  # a query that does not ask, of at least this many words (or ending with "."), states
# A kind's late-stage weights are fitted from at least this many answered questions of the kind and
# off-topic queries of it (fewer: it keeps the weights it had).
KIND_QUESTIONS, KIND_OFF_TOPIC = 10, 5
# Order weights are fitted at each of these regularisations; the one that puts the most answers
# first on the questions fitted on is kept (the least regularised only when it does better).
ORDER_C = (0.1, 1.0, 10.0, 100.0)


def kind_of(text: str) -> str:
    """"statement" when the query states something (a sentence as SciFact's claims are: at least
    STATEMENT_WORDS words, or a final full stop) and does not ask; else "question": a question, or
    a few keywords, which the news questions' weights serve (the claims' lean on shared words, which
    a short paraphrase such as "death toll" for "casualties" lacks)."""
    words = re.findall(r"[\w']+", text.lower().replace("\u2019", "'"))
    asks = text.rstrip().endswith("?") or bool(words) and (
        words[0] in QUESTION_WORDS or (len(words) > 1 and words[0] in PREPOSITIONS and words[1] in WH_WORDS))
    states = len(words) >= STATEMENT_WORDS or text.rstrip().endswith(".")
    return "statement" if states and not asks else "question"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@dataclass(frozen=True)
class LateWeights:
    """The late stage's weights for one kind of query."""

    bias: float
    late: float
    cosine: float
    keyword: float

    def of(self, lates: np.ndarray, cosines: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return sigmoid(self.bias + self.late * lates + self.cosine * cosines + self.keyword * shares)


@dataclass(frozen=True)
class RelevanceParams:
    """The weights of the relevance and the grades' thresholds: a hit's `match` is strong from
    `strong`, weak from `weak` (the default min_relevance), else none. fitted: where the weights
    were fitted ("packaged" or the calibration file); None: not fitted for this model (the
    packaged model's weights stand in for ordering, and no floor applies)."""

    bias: float = -7.21
    cosine_weight: float = 16.03
    keyword_weight: float = 8.33
    strong: float = 0.5
    weak: float = 0.1
    fitted: str | None = None
    # The late stage for each kind of query (None: off, as for weights fitted before it, which
    # grade without it).
    late_question: LateWeights | None = LateWeights(-12.38, 21.3, 6.32, 1.58)
    late_statement: LateWeights | None = LateWeights(-12.65, 9.18, 13.18, 13.78)

    def of(self, cosines: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return sigmoid(self.bias + self.cosine_weight * cosines + self.keyword_weight * shares)

    @property
    def late(self) -> bool:
        return self.late_question is not None and self.late_statement is not None

    def late_weights(self, kind: str) -> LateWeights:
        return getattr(self, f"late_{kind}")

    def of_late(self, lates: np.ndarray, cosines: np.ndarray, shares: np.ndarray, kind: str) -> np.ndarray:
        return self.late_weights(kind).of(lates, cosines, shares)

    @property
    def floor(self) -> float:
        """The default min_relevance: the weak grade's when fitted, else 0 (every hit kept)."""
        return self.weak if self.fitted else 0.0

    def record(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "fitted" and value is not None}


def base_name(model: str) -> str:
    """A model's name without its precision."""
    return model.split("@")[0]


def shipped_name(model: str) -> str:
    """The name a model's shipped weights go by at its precision: the model's and the precision's
    ("...@int8-static", without the digest of its calibration text), the model's alone at fp32.
    Quantised vectors score a little differently, so the weights fitted at a precision serve it;
    a precision without its own takes the fp32 ones."""
    name, _, precision = model.partition("@")
    precision = re.sub(r"-[0-9a-f]{8}$", "", precision)
    return f"{name}@{precision}" if precision else name


def read_params(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as relevance weights ({exc})") from exc
    if not isinstance(found, dict):
        raise ValueError(f"{path} cannot be read as relevance weights (not a JSON object)")
    return found


LATE = tuple(f"late_{kind}" for kind in KINDS)
NO_LATE = dict.fromkeys(LATE)
# Weights written before the late stage had a weight for each kind of query: one set for both.
ONE_LATE = {"late_bias": "bias", "late_weight": "late", "late_keyword_weight": "keyword"}


def numbers(found: dict, names, where: str) -> dict[str, float]:
    if not all(isinstance(found.get(n), (int, float)) and not isinstance(found.get(n), bool)
               and math.isfinite(found[n]) for n in names):
        raise ValueError(f"{where}: relevance weights need numbers {', '.join(names)}")
    return {n: float(found[n]) for n in names}


def weights_from(found: object, fitted: str) -> RelevanceParams:
    """Weights as a file keeps them; a file without the late stage's (fitted before it) grades
    without it."""
    if not isinstance(found, dict):
        raise ValueError(f"{fitted}: relevance weights need a JSON object")
    first = numbers(found, [key for key in asdict(RelevanceParams()) if key != "fitted" and key not in LATE], fitted)
    late: dict = dict(NO_LATE)
    if any(name in found for name in LATE):
        for name in LATE:
            kept = found.get(name)
            late[name] = LateWeights(**numbers(kept if isinstance(kept, dict) else {}, LateWeights.__annotations__,
                                               f"{fitted} ({name})"))
    elif any(name in found for name in ONE_LATE):
        one = numbers(found, ONE_LATE, fitted)
        late = dict.fromkeys(LATE, LateWeights(cosine=0.0, **{ONE_LATE[n]: v for n, v in one.items()}))
    return RelevanceParams(**first, **late, fitted=fitted)


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
    for name in (shipped_name(model), base_name(model)):
        if name in shipped:
            return weights_from(shipped[name], "packaged"), warning
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


@dataclass(frozen=True)
class Asked:
    """One query's hits as fitting takes them: its kind, each hit's evidence rows (cosine, keyword
    share, late interaction: NaN where not graded again) in the order shown, and the rows that
    answer it, the one counted first (none for an off-topic query)."""

    kind: str
    rows: np.ndarray
    answers: tuple[int, ...] = ()

    @property
    def answer(self) -> np.ndarray:
        return self.rows[self.answers[0]]


LATE_COLUMNS = [2, 0, 1]  # late, cosine, keyword share: LateWeights' order


def order_weights(groups: list[Asked]) -> np.ndarray:
    """Weights of (late, cosine, keyword share) that put each question's answer above its other
    graded-again hits: a logistic regression on their differences (pairs), at the regularisation
    of ORDER_C that puts the most answers first."""
    from sklearn.linear_model import LogisticRegression

    pairs = []
    for query in groups:
        again = ~np.isnan(query.rows[:, 2])
        others = np.setdiff1d(np.flatnonzero(again), query.answers)
        pairs.append(query.answer[LATE_COLUMNS] - query.rows[others][:, LATE_COLUMNS])
    x = np.vstack(pairs)
    if not len(x):
        raise ValueError("no hit to tell the answers from")
    x, y = np.vstack([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))]
    best: tuple[float, np.ndarray] | None = None
    for c in ORDER_C:
        weights = LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(x, y).coef_[0]
        first = np.mean([bool((group @ weights > 0).all()) for group in pairs])
        if best is None or first > best[0]:
            best = (first, weights)
    return best[1]


def fit_late(params: RelevanceParams, kind: str, answered: list[Asked], off_topic: list[Asked]) -> RelevanceParams:
    """The late stage's weights for one kind of query: the order from its questions' answers
    against their other graded-again hits, the scale and bias from those answers against the
    off-topic queries' best graded-again hits. A kind with too little to fit (KIND_QUESTIONS,
    KIND_OFF_TOPIC) keeps its weights."""
    groups = [a for a in answered if a.kind == kind and not np.isnan(a.answer[2])]
    negatives = [a.rows[~np.isnan(a.rows[:, 2])] for a in off_topic if a.kind == kind]
    negatives = [rows for rows in negatives if len(rows)]
    if len(groups) < KIND_QUESTIONS or len(negatives) < KIND_OFF_TOPIC:
        return params
    try:
        weights = order_weights(groups)
    except ValueError:
        return params
    positives = np.array([a.answer[LATE_COLUMNS] @ weights for a in groups])
    best = np.array([(rows[:, LATE_COLUMNS] @ weights).max() for rows in negatives])
    bias, scale = logistic(positives[:, None], best[:, None])
    late = LateWeights(bias, *(round(float(w * scale), 2) for w in weights))
    return replace(params, **{f"late_{kind}": late})


def fit(answered: list[Asked], off_topic: list[Asked], params: RelevanceParams) -> RelevanceParams:
    """The first stage: answers' (cosine, keyword share) against the off-topic queries' best hits'
    (as the params shown them); then, when the params have a late stage, its weights for each kind
    of query (fit_late)."""
    positives = np.array([a.answer[:2] for a in answered], float)
    negatives = np.array([a.rows[np.argmax(shown(params, a.rows, a.kind))][:2] for a in off_topic if len(a.rows)],
                         float).reshape(-1, 2)
    if not len(negatives):
        negatives = np.zeros((1, 2))
    bias, cosine, keyword = logistic(positives, negatives)
    fitted = replace(params, bias=bias, cosine_weight=cosine, keyword_weight=keyword)
    for kind in KINDS if params.late else ():
        fitted = fit_late(fitted, kind, answered, off_topic)
    return fitted


def shown(params: RelevanceParams, rows: np.ndarray, kind: str) -> np.ndarray:
    """The relevance of a query's hits with evidence rows (cosine, keyword share[, late]) as a
    search shows it: the late stage's where a hit was graded again, else the first, scaled below
    the lowest of those."""
    rows = np.asarray(rows, float)
    first = params.of(rows[:, 0], rows[:, 1])
    again = ~np.isnan(rows[:, 2]) if rows.shape[1] >= 3 and params.late else np.zeros(len(rows), bool)
    if again.any():
        first[again] = params.of_late(rows[again, 2], rows[again, 0], rows[again, 1], kind)
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


def answer_relevance(params: RelevanceParams, answered: list[Asked]) -> np.ndarray:
    """Each question's answer's relevance as shown."""
    return np.array([shown(params, a.rows, a.kind)[a.answers[0]] for a in answered])


def best_relevance(params: RelevanceParams, off_topic: list[Asked]) -> np.ndarray:
    """Each off-topic query's best hit's relevance as shown (0 with no hit)."""
    return np.array([shown(params, a.rows, a.kind).max() if len(a.rows) else 0.0 for a in off_topic])


def late_lines(params: RelevanceParams) -> str:
    return "; ".join(f"late interaction for a {kind}: bias {w.bias:g}, late {w.late:g}, cosine {w.cosine:g}, "
                     f"keyword {w.keyword:g}" for kind in KINDS if (w := params.late_weights(kind)) is not None)


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
    kinds: dict[str, tuple[int, int]] | None = None  # kind -> (answered questions, off-topic queries) of it

    def lines(self) -> list[str]:
        p = self.params
        said = [f"fitted on {self.answered} of {self.questions} questions (answer in the first {FIT_DEPTH}) "
                f"and {self.off_topic} off-topic queries",
                f"weights: bias {p.bias:g}, cosine {p.cosine_weight:g}, keyword {p.keyword_weight:g}"
                + (f"; {late_lines(p)}" if p.late else "") + f"; floor {p.weak:g}",
                f"answers kept: {self.kept:.1%}; off-topic queries answered with nothing: {self.nothing:.1%}"]
        for kind, (questions, off_topic) in (self.kinds or {}).items():
            if p.late and (questions < KIND_QUESTIONS or off_topic < KIND_OFF_TOPIC):
                said.append(f"late interaction for a {kind}: weights kept, too few to fit ({questions} answered "
                            f"questions and {off_topic} off-topic queries of that kind; fitting takes "
                            f"{KIND_QUESTIONS} and {KIND_OFF_TOPIC})")
        if self.before is not None:
            said.append(f"with the weights before: answers kept {self.before[0]:.1%}, off-topic answered with "
                        f"nothing {self.before[1]:.1%}")
        return said


def calibrate(searcher, questions: list, off_topic: list[str]) -> Calibration:
    """Fit the relevance weights on an index: each question's answering passage (when in the
    first FIT_DEPTH of the hybrid list) against its other hits and each off-topic query's best hit."""
    from indexer.search.searcher import Query

    if not questions or not off_topic:
        raise ValueError("calibrating needs at least one question and one off-topic query")

    before = searcher.relevance
    if not before.late:  # weights fitted before late interaction: its stage is fitted too
        searcher.relevance = replace(before, **{n: getattr(RelevanceParams(), n) for n in LATE})

    def evidence(text: str) -> list:
        return searcher.search(Query(text, k=200, min_relevance=0))

    try:
        return calibrated(evidence, questions, off_topic, before, searcher.relevance)
    finally:
        searcher.relevance = before


def asked(hits: list, kind: str, answers=lambda hit: False) -> Asked:
    """A query's hits as fitting takes them (answers: whether a hit answers it)."""
    rows = np.array([h.evidence for h in hits], float).reshape(-1, 3)
    return Asked(kind, rows, tuple(n for n, h in enumerate(hits) if answers(h)))


def calibrated(evidence, questions: list, off_topic: list[str], before: RelevanceParams,
               start: RelevanceParams | None = None) -> Calibration:
    """calibrate() on evidence(text), a search's hits with their evidence (start: the weights those
    searches use, to fit from; before's by default)."""
    start = start or before
    answered = []
    for q in questions:
        hits = evidence(q.text)
        if any(q.answered_by(h) for h in hits[:FIT_DEPTH]):
            answered.append(asked(hits, kind_of(q.text), q.answered_by))
    if len(answered) < 2:
        raise ValueError(f"only {len(answered)} of {len(questions)} questions have their answer in the first "
                         f"{FIT_DEPTH}: check that the questions' doc_ids and answers match this index")
    unanswered = [asked(evidence(text), kind_of(text)) for text in off_topic]
    params = fit(answered, unanswered, replace(start, fitted="calibrated"))
    params = with_floor(params, answer_relevance(params, answered), best_relevance(params, unanswered))

    def figures(p: RelevanceParams) -> tuple[float, float]:
        return (float((answer_relevance(p, answered) >= p.weak).mean()),
                float((best_relevance(p, unanswered) < p.weak).mean()))

    kept, nothing = figures(params)
    kinds = {kind: (sum(a.kind == kind for a in answered), sum(a.kind == kind for a in unanswered)) for kind in KINDS}
    return Calibration(params, len(questions), len(answered), len(off_topic), kept, nothing,
                       figures(before) if before.fitted else None, kinds)


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
