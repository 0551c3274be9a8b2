"""Designs of the late stage (the first 30 passages graded again), fitted and measured on training data only.

    .venv/bin/python bench/late_stage.py --scifact "$SCIFACT" --json bench/results/late_stage.json

The product's Searcher (late stage off) gives each query of the news questions' fit half (over
all 28 articles), SciFact train (articles ranked by their best passage) and the off-topic set
(against both indexes) its first 30 passages by the first relevance, with their evidence:
cosine, keyword share, each query piece's best match among the passage's pieces (and each passage
piece's best match among the query's: how much of the passage the query covers), its number of
pieces, its best sentence's cosine, the same late score from pieces read from its text alone (no
title or section before it), the share of the query's keyword weight its title and its section
hold, whether it holds what the question asks for (a number, a time, a name, a place or a reason,
by the first words of the question and a pattern over the passage, as question-answering systems
type the expected answer), and for SciFact the best late score over all its article's passages
the lists found. Each design is fitted as indexer/search/relevance.py fits the shipped weights
(pairwise for the order, at the C that puts the most answers first; one set for every query, or
a set for each kind of query) and reported by what chose it: the fit half's hit@1 (the answer
first) and SciFact train's nDCG@10, both over the first 30 reordered above the rest, and the
share of the fit half whose first passage is of the right article. At the floor fitted on the fit
half, the grade: off-topic queries answered with nothing on each index, the fit half's answers
kept. The news test half, the 61 and SciFact test are not read here: `semsearch eval` measures
the design the product ships.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scorer  # noqa: E402
from bench.report import emit  # noqa: E402

DEPTH = 30
C_GRID = (0.1, 1.0, 10.0, 100.0)
STOPWORD_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
UNCOVERED = 0.5  # a query piece matched below this by every piece of a passage is not in it
LENGTH_CORRECTIONS = (0.02, 0.06)  # of the late score, in units of expected_best
NEWS_PIECES = 42  # a news paragraph's pieces, about


def expected_best(pieces: int) -> float:
    """How the best of n chance matches grows with n (the maximum of n normal draws, in standard
    deviations): a long passage holds a fair match for any query piece."""
    return float(np.sqrt(2 * np.log(max(pieces, 2))))


def candidates(searcher, model, text: str, answers, group: str | None, text_codes: dict) -> dict:
    """The query's first DEPTH passages by the first relevance, each with its evidence."""
    from indexer.model import pieces
    from indexer.search.searcher import Query

    found = searcher.retrieve(Query(text, k=10, min_relevance=0, group=group), None)
    order = sorted(found.graded, key=lambda i: (-found.graded[i][0], i))
    top = order[:DEPTH]
    held, stored = searcher.index.pieces(top), searcher.index.fetch(top)
    missing = [i for i in top if i not in text_codes]
    for first in range(0, len(missing), 16):  # pieces read from the text alone, once a passage
        batch = missing[first:first + 16]
        _, tokens, offsets = model.forward([stored[i].passage.text for i in batch])
        for row, i in enumerate(batch):
            text_codes[i] = pieces.codes(tokens[row][offsets[row, :, 1] > offsets[row, :, 0]])
    vector, query_pieces, spans = searcher.embed_query_pieces(text)
    query_pieces = query_pieces / pieces.CODE_SCALE
    weights = searcher.piece_weights(text, spans)
    weights = np.ones(len(query_pieces)) if weights is None else weights
    stopwords = np.array([not terms for terms in searcher.analyzer.piece_terms(text, spans.tolist())], bool)

    def best(codes: np.ndarray) -> np.ndarray:
        return (query_pieces @ codes.T.astype(np.float32)).max(axis=1) if len(codes) else np.zeros(len(query_pieces))

    def covered(codes: np.ndarray) -> float:
        """How much of the passage the query covers: the mean of each passage piece's best match."""
        return float((query_pieces @ codes.T.astype(np.float32)).max(axis=0).mean()) if len(codes) else 0.0

    terms = searcher.analyzer.query_terms(text)
    idf = searcher.index.term_weights(terms) if terms else {}
    total = searcher.keyword_total(terms, idf)
    unseen = float(np.log1p((searcher.index.info.passages + 0.5) / 0.5))

    def share(field: str) -> float:
        """The share of the query's keyword weight a field of the passage (its title, its section) holds."""
        held_terms = set(searcher.analyzer.terms(field or ""))
        return sum(idf.get(t) or unseen for t in terms if t in held_terms) / total if total > 0 else 0.0

    asks = answer_types(text)
    rows = [{"id": i, "doc": stored[i].passage.doc_id, "label": bool(answers(stored[i].passage)),
             "relevance": found.graded[i][0],
             "cosine": found.graded[i][1], "share": found.graded[i][2], "sims": best(held.get(i, np.zeros((0, 1)))),
             "pieces": len(held.get(i, ())), "text_sims": best(text_codes[i]),
             "covered": covered(held.get(i, np.zeros((0, 1)))),
             "title_share": share(stored[i].passage.title), "section_share": share(stored[i].passage.section),
             "answer_type": float(any(TYPES[kind][1].search(stored[i].passage.text) for kind in asks)),
             "sentence": float((stored[i].sentence_vectors @ vector).max()) if len(stored[i].sentence_vectors)
             else found.graded[i][1]} for i in top]
    return {"text": text, "rows": rows, "rest": [(i, found.graded[i][0]) for i in order[DEPTH:]], "weights": weights,
            "stopwords": stopwords}


# What a question asks for (its first words) and what a passage holding it looks like, roughly,
# as question-answering systems type the expected answer.
MONTHS_AND_DAYS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
                   "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
TYPES = {
    "number": (re.compile(r"^how (much|many|long|far|big|hot|fast|often|old|high|deep|large|small|low)\b|"
                          r"\bwhat (percentage|proportion|share|score)\b"),
               re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|"
                          r"hundred|thousand|million|billion|half|third|quarter|dozen)\b", re.I)),
    "time": (re.compile(r"^(when|how soon)\b|\bwhat (time|date)\b|\bwhich (day|date|year|month|week)\b"),
             re.compile(rf"\b({MONTHS_AND_DAYS}|spring|summer|autumn|winter|weekend|tomorrow|overnight|"
                        r"(next|last|this) (week|month|year)|(19|20)\d\d|\d+(\.\d+)? ?[ap]\.m\.|"
                        r"(within|in|for|after|before|until|by) (about )?(\w+ )?(days?|weeks?|months?|years?|hours?))\b")),
    "person": (re.compile(r"^(who|whom|whose)\b"),
               re.compile(r"(?<![.!?] )\b[A-Z][a-z]+ [A-Z][a-z]+\b|\b(minister|mayor|director|chief|spokesman|"
                          r"spokeswoman|president|leader|officer|coach|judge|councillor)\b")),
    "place": (re.compile(r"^where\b|\b(which|what) (areas?|towns?|city|country|roads?|streets?|districts?|villages?)\b"),
              re.compile(r"\b(in|at|from|near|across|between) (the )?[A-Z][a-z]+|\b(Street|Road|Lane|junctions?|"
                         r"districts?|villages?|towns?|region|motorway)\b")),
    "reason": (re.compile(r"^why\b|\bwhat (caused|led to)\b"),
               re.compile(r"\b(because|due to|as a result|after|since|so that|in order to|caused|led to|reason|"
                          r"blamed|means|saying|said|says|would|could)\b", re.I)),
}


def answer_types(text: str) -> list[str]:
    question = text.lower().strip()
    return [kind for kind, (asks, _) in TYPES.items() if asks.search(question)]


def article_late(searcher, query: dict) -> None:
    """For an article ranked by its best passage: the best late score over all its passages the
    (passage-level) lists found."""
    from indexer.model import pieces
    from indexer.search.searcher import Query

    found = searcher.retrieve(Query(query["text"], k=10, min_relevance=0), None)
    ids = [i for i, _ in found.ranked]
    documents = searcher.index.documents_of(ids + [r["id"] for r in query["rows"]])
    wanted = {documents[r["id"]] for r in query["rows"]}
    held = searcher.index.pieces([i for i in ids if documents[i] in wanted])
    scores = pieces.late(searcher.embed_query_pieces(query["text"])[1], list(held.values()), query["weights"])
    best: dict[int, float] = {}
    for i, score in zip(held, scores):
        best[documents[i]] = max(best.get(documents[i], -1.0), float(score))
    for r in query["rows"]:
        r["article_late"] = max(best.get(documents[r["id"]], -1.0), weighted(query["weights"], r["sims"]))


def weighted(weights: np.ndarray, sims: np.ndarray) -> float:
    """late() from each query piece's best match: weighted by the pieces' weights (idf) as the
    product weighs them."""
    return float(weights @ sims / weights.sum()) if weights.sum() > 0 else float(sims.mean())


FEATURES = {
    "late": lambda r: r["late"],
    "late, pieces alike": lambda r: float(r["sims"].mean()),
    "cosine": lambda r: r["cosine"],
    "keyword": lambda r: r["share"],
    "pieces": lambda r: float(np.log1p(r["pieces"])),
    "sentence": lambda r: r["sentence"],
    "late of the text alone": lambda r: r["text_late"],
    "article late": lambda r: r.get("article_late", r["late"]),
    "covered": lambda r: r["covered"],
    "title share": lambda r: r["title_share"],
    "section share": lambda r: r["section_share"],
    "answer type": lambda r: r["answer_type"],
    "uncovered": lambda r: r["uncovered"],
    **{f"late less {c:g} x length": (lambda r, c=c: r["late"] - c * (expected_best(r["pieces"]) - expected_best(NEWS_PIECES)))
       for c in LENGTH_CORRECTIONS},
}


def matrix(query: dict, columns) -> np.ndarray:
    return np.array([[FEATURES[c](r) for c in columns] for r in query["rows"]]).reshape(-1, len(columns))


def answered(queries: list[dict]) -> list[dict]:
    return [q for q in queries if any(r["label"] for r in q["rows"])]


def order_weights(queries: list[dict], columns, c: float) -> np.ndarray:
    """Pairwise logistic regression: each answer against the query's other candidates."""
    from sklearn.linear_model import LogisticRegression

    pairs = []
    for q in answered(queries):
        x, labels = matrix(q, columns), np.array([r["label"] for r in q["rows"]])
        pairs.append(x[np.argmax(labels)] - x[~labels])
    x = np.vstack(pairs)
    return LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(
        np.vstack([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))]).coef_[0]


def first(queries: list[dict], columns, weights: np.ndarray) -> float:
    """Share of the queries whose answer comes first (0 for those without one in the first DEPTH)."""
    return float(np.mean([bool(q["rows"][int(np.argmax(matrix(q, columns) @ weights))]["label"])
                          if q["rows"] else False for q in queries]))


def article_first(queries: list[dict], columns, weights: np.ndarray) -> float:
    """Share of the queries whose first passage is of an article that answers them."""
    return round(float(np.mean([bool(q["rows"]) and q["rows"][int(np.argmax(matrix(q, columns) @ weights))]["doc"]
                                in {r["doc"] for r in q["rows"] if r["label"]} for q in queries])), 4)


def fitted(queries: list[dict], columns) -> np.ndarray:
    weights = [order_weights(queries, columns, c) for c in C_GRID]
    return max(weights, key=lambda w: first(answered(queries), columns, w))  # the first best on ties


def ndcg(queries: list[dict], qrels: list[dict], columns, weights: np.ndarray) -> float:
    """SciFact nDCG@10 with the first DEPTH articles reordered by the design, above the rest."""
    from ranx import Qrels, Run, evaluate

    run = {}
    for n, q in enumerate(queries):
        scores = matrix(q, columns) @ weights if q["rows"] else np.zeros(0)
        ranked = [q["rows"][i]["doc"] for i in np.argsort(-scores, kind="stable")] + [doc for doc, _ in q["rest"]]
        run[str(n)] = {doc: float(len(ranked) - at) for at, doc in enumerate(dict.fromkeys(ranked))}
    return round(float(evaluate(Qrels({str(n): j for n, j in enumerate(qrels)}), Run(run), "ndcg@10")), 4)


def graded(sets: dict, columns, kinds: bool) -> tuple[dict, float, Callable]:
    """Order weights (one set, or one for each kind of query, fitted on its own training queries)
    and, like the shipped relevance, a scale and bias for each set of weights from the answers
    against the off-topic queries' best candidates; the floor from the fit half."""
    from indexer.search.relevance import RelevanceParams, kind_of, logistic, with_floor

    training = {"question": sets["fit"], "statement": sets["scifact_train"]}
    if kinds:
        weights = {kind: fitted(queries, columns) for kind, queries in training.items()}
    else:
        together = fitted(sets["fit"] + sets["scifact_train"], columns)
        weights = dict.fromkeys(training, together)
    kind = {id(q): kind_of(q["text"]) if kinds else "question" for s in sets.values() for q in s}
    off_topic = [q for q in sets["off_topic_news"] + sets["off_topic_scifact"] if q["rows"]]
    scale = {}
    for name, queries in training.items():
        mine = [q for q in off_topic if not kinds or kind[id(q)] == name]
        positives = [float(matrix(q, columns)[int(np.argmax([r["label"] for r in q["rows"]]))] @ weights[name])
                     for q in answered(queries)]
        negatives = [float((matrix(q, columns) @ weights[name]).max()) for q in mine]
        scale[name] = logistic(np.array(positives)[:, None], np.array(negatives)[:, None])

    def relevance(q: dict) -> np.ndarray:
        bias, times = scale[kind[id(q)]]
        return 1 / (1 + np.exp(-(bias + times * (matrix(q, columns) @ weights[kind[id(q)]]))))

    answers = np.array([relevance(q)[int(np.argmax([r["label"] for r in q["rows"]]))] for q in answered(sets["fit"])])
    floor = with_floor(RelevanceParams(fitted="x"), answers,
                       np.array([relevance(q).max() for q in sets["off_topic_news"] if q["rows"]])).weak
    return weights, floor, relevance


def main() -> None:
    parser = scorer.arguments(__doc__.splitlines()[0])
    parser.add_argument("--precision", default="int8-static")
    args = parser.parse_args()
    from indexer.engines.faiss import store
    from indexer.eval.beir import read_corpus, read_qrels, read_queries
    from indexer.eval.questions import read_off_topic, read_questions
    from indexer.index.build import build_from_documents
    from indexer.model.cpu import read_cpu
    from indexer.model.embedding import light_model_for
    from indexer.search.searcher import FusionParams, Searcher

    model = light_model_for(None, precision=args.precision)
    off_topic = read_off_topic(ROOT / scorer.OFF_TOPIC)
    sets: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="semsearch-late-") as scratch:
        searchers = {}
        for name, documents in (("news", scorer.news_documents()), ("scifact", list(read_corpus(args.scifact)))):
            build_from_documents(documents, Path(scratch) / name, model, False)
            searchers[name] = Searcher(store.load(Path(scratch) / name, model.name, model.dimension), model,
                                       FusionParams(late_depth=0))
        codes: dict = {"news": {}, "scifact": {}}
        sets["fit"] = [candidates(searchers["news"], model, q.text,
                                  lambda p, q=q: p.doc_id in q.doc_ids and any(a in p.text for a in q.answers),
                                  None, codes["news"]) for q in read_questions(ROOT / scorer.NEWS_SETS["fit"])]
        queries, qrels = read_queries(args.scifact), read_qrels(args.scifact, "train")
        judged = [j for q, j in qrels.items() if q in queries]
        sets["scifact_train"] = [candidates(searchers["scifact"], model, queries[q],
                                            lambda p, j=j: j.get(p.doc_id, 0) > 0, "document", codes["scifact"])
                                 for q, j in qrels.items() if q in queries]
        for name in ("news", "scifact"):
            sets[f"off_topic_{name}"] = [candidates(searchers[name], model, text, lambda p: False,
                                                    None if name == "news" else "document", codes[name])
                                         for text in off_topic]
        for q in sets["scifact_train"] + sets["off_topic_scifact"]:
            article_late(searchers["scifact"], q)
        for q in sets["scifact_train"] + sets["off_topic_scifact"]:  # articles by id, as the qrels name them
            stored = searchers["scifact"].index.fetch([i for i, _ in q["rest"]])
            q["rest"] = [(stored[i].passage.doc_id, s) for i, s in q["rest"]]

    def weigh(stopword: float | None) -> None:
        """Each row's late scores with the pieces weighted as the product weighs them (stopword
        pieces at stopword; None: the product's)."""
        for queries in sets.values():
            for q in queries:
                weights = q["weights"] if stopword is None else np.where(q["stopwords"], stopword, q["weights"])
                content = weights * ~q["stopwords"]
                for r in q["rows"]:
                    r["late"], r["text_late"] = weighted(weights, r["sims"]), weighted(weights, r["text_sims"])
                    # the share of the query's words (by idf) that no piece of the passage matches well
                    r["uncovered"] = float(content @ (r["sims"] < UNCOVERED) / content.sum()) if content.sum() else 0.0

    weigh(None)
    designs = {
        "each kind, every query piece alike": (("late, pieces alike", "cosine", "keyword"), True),
        "one set: late, cosine, keyword": (("late", "cosine", "keyword"), False),
        "a set for each kind: late (pieces by idf), cosine, keyword (shipped)": (("late", "cosine", "keyword"), True),
        "a set for each kind: late and keyword": (("late", "keyword"), True),
        "each kind, with the number of pieces": (("late", "cosine", "keyword", "pieces"), True),
        "each kind, with the best sentence's cosine": (("late", "cosine", "sentence", "keyword"), True),
        "each kind, pieces of the text alone": (("late of the text alone", "cosine", "keyword"), True),
        "each kind, both sets of pieces": (("late", "late of the text alone", "cosine", "keyword"), True),
        "each kind, an article's best late over its passages": (("article late", "cosine", "keyword"), True),
        "each kind, with how much of the passage the query covers": (("late", "cosine", "keyword", "covered"), True),
        "each kind, with the title's and section's keyword share": (
            ("late", "cosine", "keyword", "title share", "section share"), True),
        "each kind, with the share of the query's words no piece matches": (
            ("late", "cosine", "keyword", "uncovered"), True),
        "each kind, with whether the passage holds what the question asks for": (
            ("late", "cosine", "keyword", "answer type"), True),
        **{f"each kind, late less {c:g} x how a passage's best chance match grows with its length": (
            (f"late less {c:g} x length", "cosine", "keyword"), True) for c in LENGTH_CORRECTIONS},
    }
    report = {"cpu": read_cpu().describe(), "model": model.name, "depth": DEPTH, "designs": {}}
    for label, (columns, kinds) in designs.items():
        weights, floor, relevance = graded(sets, columns, kinds)
        report["designs"][label] = {
            "fit half hit@1": round(first(sets["fit"], columns, weights["question"]), 4),
            "SciFact train nDCG@10": ndcg(sets["scifact_train"], judged, columns, weights["statement"]),
            "floor": floor,
            "off-topic nothing, SciFact index": round(float(np.mean(
                [not q["rows"] or relevance(q).max() < floor for q in sets["off_topic_scifact"]])), 4),
            "off-topic nothing, news index": round(float(np.mean(
                [not q["rows"] or relevance(q).max() < floor for q in sets["off_topic_news"]])), 4),
            "fit half kept": round(float(np.mean([relevance(q)[int(np.argmax([r["label"] for r in q["rows"]]))] >= floor
                                                  for q in answered(sets["fit"])])), 4),
            "fit half article first": article_first(sets["fit"], columns, weights["question"])}
        print(label, report["designs"][label], file=sys.stderr, flush=True)
    columns = ("late", "cosine", "keyword")
    for stopword in STOPWORD_WEIGHTS:  # what a piece of a stopword or punctuation weighs
        weigh(stopword)
        weights, _, _ = graded(sets, columns, True)
        report["designs"][f"each kind, stopword pieces at {stopword:g}"] = {
            "fit half hit@1": round(first(sets["fit"], columns, weights["question"]), 4),
            "SciFact train nDCG@10": ndcg(sets["scifact_train"], judged, columns, weights["statement"])}
        print(stopword, report["designs"][f"each kind, stopword pieces at {stopword:g}"], file=sys.stderr, flush=True)
    emit(report, args.json)


if __name__ == "__main__":
    main()
