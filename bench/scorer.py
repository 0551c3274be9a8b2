"""Fit the one score (relevance) that orders hybrid results and grades them, and measure it.

    .venv/bin/python bench/scorer.py --scifact "$SCIFACT" --json bench/results/scorer.json

Step 1, evidence (cached in --cache, one file per passage input): for each way a passage is
shown to the model (`title+section` before the text as indexes were built before; `section`; the
text alone) it builds an index of the project's articles (seeds/, tests/questions/articles,
tests/questions/news/articles) and of SciFact's corpus with the packaged model at the CPU's
default precision. For every query (the 61 of tests/questions/questions.jsonl, the news fit and
test halves, the off-topic queries, SciFact train and test) it reads the dense and keyword lists
200 deep and keeps, for each passage either list found, its evidence (FEATURES) and whether it
answers.

Step 2, the scorer: a logistic regression over the evidence, fitted on training data only (the
news fit half and SciFact train, each query's answers against the other passages its lists
found, plus the off-topic queries' passages as non-answers), classes weighted equally. The news
test half, the 61 and SciFact test are only measured: paragraph hit@1 and hit@3, the right article
first, SciFact test nDCG@10 (articles by their best passage), the share of off-topic queries with
nothing at or above the floor and of real answers (in the first 10) kept.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

NEWS_SETS = {"61": "tests/questions/questions.jsonl", "fit": "tests/questions/news/fit.jsonl",
             "test": "tests/questions/news/test.jsonl"}
OFF_TOPIC = "tests/questions/off_topic.txt"
FOLDERS = ("seeds", "tests/questions/articles", "tests/questions/news/articles")
INPUTS = {"title+section": lambda title, section: (title, section), "section": lambda title, section: ("", section),
          "text": lambda title, section: ("", "")}
# Per candidate passage: what answers, and the evidence a scorer may use.
FEATURES = ("cosine", "sentence", "keyword", "title", "title_keyword", "lead", "question", "paragraph", "length")
# Worked out per query from the others: the best cosine of the passage's article, and the cosine
# of the passage before it in its article (the question of an interview's answer).
DERIVED = ("article", "before")
DEPTH = 200


def candidates(searcher, reader, text: str, titles: dict, title_terms: dict, answers) -> list[tuple]:
    """(passage id, doc_id, answers?, evidence...) of every passage either list found."""
    vector, terms = searcher.embed_query(text), searcher.analyzer.query_terms(text)
    dense, sparse = searcher.lists(vector, terms, DEPTH, None, False)
    weights = reader.term_weights(terms) if terms else {}
    total = searcher.keyword_total(terms, weights)
    cosines, keywords = dict(dense), dict(sparse)
    ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in sparse]))
    stored = reader.fetch(ids)
    firsts: dict[str, int] = {}
    for i in ids:
        p = stored[i].passage
        firsts[p.doc_id] = min(firsts.get(p.doc_id, p.paragraph), p.paragraph)
    rows = []
    for i in ids:
        passage, sentences = stored[i].passage, stored[i].sentence_vectors
        cosine = cosines.get(i, dense[-1][1])
        best_sentence = float((sentences @ vector).max()) if len(sentences) else cosine
        keyword = min(keywords.get(i, 0.0) / total, 1.0) if total else 0.0
        title = float(titles[passage.doc_id] @ vector)
        title_keyword = min(sum(weights.get(t, 0) for t in set(terms) if t in title_terms[passage.doc_id]) / total,
                            1.0) if total else 0.0
        rows.append((i, passage.doc_id, answers(passage), float(cosine), best_sentence, float(keyword), title,
                     float(title_keyword), float(passage.paragraph == 1), float(passage.text.rstrip().endswith("?")),
                     float(passage.paragraph), math.log(len(passage.text) + 1)))
    return rows


def query_sets(scifact: Path) -> dict[str, list[tuple[str, Callable]]]:
    """Every query set by name, in the order of its evidence table: (query text, what answers it)."""
    from indexer.eval.beir import read_qrels, read_queries
    from indexer.eval.questions import read_off_topic, read_questions

    sets: dict[str, list[tuple[str, Callable]]] = {}
    for name, path in NEWS_SETS.items():
        sets[name] = [(q.text, lambda p, q=q: p.doc_id in q.doc_ids and any(a in p.text for a in q.answers))
                      for q in read_questions(ROOT / path)]
    queries = read_queries(scifact)
    for split in ("train", "test"):
        sets[f"scifact_{split}"] = [(queries[q], lambda p, j=judged: j.get(p.doc_id, 0) > 0)
                                    for q, judged in read_qrels(scifact, split).items() if q in queries]
    off_topic = [(text, lambda p: False) for text in read_off_topic(ROOT / OFF_TOPIC)]
    sets["off_topic_news"] = sets["off_topic_scifact"] = off_topic
    return sets


def news_documents() -> list:
    from indexer.text.documents import read_folder

    return [d for f in FOLDERS for d in read_folder(ROOT / f)]


def build_tables(passage_input: str, model, scifact: Path) -> dict[str, list[list[tuple]]]:
    from indexer.text import chunking
    from indexer.eval.beir import read_corpus
    from indexer.index.build import build_from_documents
    from indexer.index.engine import open_engine
    from indexer.search.searcher import Searcher

    original = chunking.context_of
    chunking.context_of = lambda title, section: original(*INPUTS[passage_input](title, section))
    tables: dict[str, list[list[tuple]]] = {}
    sets = query_sets(scifact)
    try:
        with tempfile.TemporaryDirectory(prefix="semsearch-scorer-") as work:
            for corpus, documents in (("news", news_documents()), ("scifact", list(read_corpus(scifact)))):
                build_from_documents(documents, Path(work) / corpus, model, progress=False)
                engine = open_engine(Path(work) / corpus, model.name, model.dimension)
                reader = engine.reader()
                searcher = Searcher(reader, model)
                titles = dict(zip([d.doc_id for d in documents], model.embed([d.title for d in documents], progress=False)))
                title_terms = {d.doc_id: set(searcher.analyzer.terms(d.title)) for d in documents}
                names = (*NEWS_SETS, "off_topic_news") if corpus == "news" else ("scifact_train", "scifact_test",
                                                                                  "off_topic_scifact")
                for name in names:
                    tables[name] = [candidates(searcher, reader, text, titles, title_terms, answers)
                                    for text, answers in sets[name]]
                engine.close()
    finally:
        chunking.context_of = original
    return tables


def cached_tables(passage_input: str, model, precision: str, scifact: Path, cache: Path) -> dict:
    """The evidence tables of a passage input, built once and kept in cache."""
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"{passage_input}-{precision}.pickle"
    if cached.exists():
        return pickle.loads(cached.read_bytes())
    started = time.perf_counter()
    tables = build_tables(passage_input, model, scifact)
    cached.write_bytes(pickle.dumps(tables))
    print(f"{passage_input}: evidence in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return tables


def matrix(table: list[list[tuple]], columns) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Per query: (evidence rows, answers, doc_ids)."""
    return [(np.array([[value(r, c, rows) for c in columns] for r in rows]).reshape(-1, len(columns)),
             np.array([r[2] for r in rows], bool), [r[1] for r in rows]) for rows in table]


def value(row: tuple, column: str, rows: list[tuple]) -> float:
    if column in FEATURES:
        return row[3 + FEATURES.index(column)]
    cosine, paragraph = FEATURES.index("cosine") + 3, FEATURES.index("paragraph") + 3
    same = [r for r in rows if r[1] == row[1]]
    if column == "article":
        return max(r[cosine] for r in same)
    floor = min(r[cosine] for r in rows)
    return max((r[cosine] for r in same if r[paragraph] == row[paragraph] - 1), default=floor)


def fit(tables: dict, columns, c: float = 1.0, matrix_of: Callable = None):
    """A logistic regression of the training sets' answers against everything else they and the
    off-topic queries found; each training set's queries weigh the same in total. matrix_of(name,
    columns): the per-query evidence of a set (default: the table's own columns)."""
    from sklearn.linear_model import LogisticRegression

    matrix_of = matrix_of or (lambda name, columns: matrix(tables[name], columns))
    xs, ys, ws = [], [], []
    for name in ("fit", "scifact_train", "off_topic_news", "off_topic_scifact"):
        per_query = matrix_of(name, columns)
        for x, y, _ in per_query:
            xs.append(x)
            ys.append(y)
            # every query counts once; within it answers and the rest count half each
            positives = max(int(y.sum()), 1)
            ws.append(np.where(y, 0.5 / positives, 0.5 / max(len(y) - int(y.sum()), 1)) / len(per_query))
    model = LogisticRegression(C=c, max_iter=2000).fit(np.vstack(xs), np.concatenate(ys),
                                                       sample_weight=np.concatenate(ws) * 1000)
    return float(model.intercept_[0]), model.coef_[0].astype(float)


def fit_shipped_way(tables: dict, columns, matrix_of: Callable = None):
    """As the shipped weights are fitted (bench/relevance.py --fit): SciFact train's answers in
    the first 10 against each off-topic query's best hit, classes weighted equally."""
    from sklearn.linear_model import LogisticRegression

    matrix_of = matrix_of or (lambda name, columns: matrix(tables[name], columns))
    bias, weights = fit(tables, columns, matrix_of=matrix_of)  # an order to find "the first 10" and "the best hit" by
    positives, negatives = [], []
    for x, y, _ in matrix_of("scifact_train", columns):
        s = relevance(bias, weights, x)
        top = np.lexsort((np.arange(len(s)), -s))[:10]
        answer = next((i for i in top if y[i]), None)
        if answer is not None:
            positives.append(x[answer])
    for name in ("off_topic_news", "off_topic_scifact"):
        negatives += [x[np.argmax(relevance(bias, weights, x))] for x, _, _ in matrix_of(name, columns) if len(x)]
    x = np.vstack([positives, negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    model = LogisticRegression(class_weight="balanced", C=10.0).fit(x, y)
    return float(model.intercept_[0]), model.coef_[0].astype(float)


def relevance(bias: float, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(bias + x @ weights)))


def ranking_figures(per_query, score) -> dict:
    first = third = article = 0
    for x, y, docs in per_query:
        s = score(x)
        order = np.lexsort((np.arange(len(s)), -s))
        first += bool(y[order[:1]].any())
        third += bool(y[order[:3]].any())
        answering = {d for d, a in zip(docs, y) if a}
        article += bool(len(order)) and docs[order[0]] in answering
    n = len(per_query)
    return {"hit@1": round(first / n, 3), "hit@3": round(third / n, 3), "article@1": round(article / n, 3)}


def ndcg(per_query, score, qrels: list[dict]) -> float:
    """SciFact nDCG@10 (linear gain), articles ranked by their best passage's score."""
    total = 0.0
    for (x, _, docs), judged in zip(per_query, qrels):
        s = score(x)
        best: dict[str, float] = {}
        for d, v in zip(docs, s):
            best[d] = max(best.get(d, -math.inf), v)
        ranked = sorted(best, key=lambda d: -best[d])[:10]
        dcg = sum(judged.get(d, 0) / math.log2(n + 2) for n, d in enumerate(ranked))
        ideal = sum(g / math.log2(n + 2) for n, g in enumerate(sorted(judged.values(), reverse=True)[:10]))
        total += dcg / ideal if ideal else 0.0
    return round(total / len(per_query), 4)


def evaluate(tables: dict, columns, score, floor: float, scifact: Path, matrix_of: Callable = None,
             grade: Callable = None) -> dict:
    """Figures of a scorer: score(x) orders a query's passages; grade(x) (default: score) is the
    relevance the floor is applied to, which must keep score's order within a query."""
    from indexer.eval.beir import read_qrels, read_queries

    matrix_of = matrix_of or (lambda name, columns: matrix(tables[name], columns))
    grade = grade or score
    queries = read_queries(scifact)
    test_qrels = [judged for q, judged in read_qrels(scifact, "test").items() if q in queries]
    report = {name: ranking_figures(matrix_of(name, columns), score) for name in ("61", "fit", "test")}
    report["scifact_test_ndcg@10"] = ndcg(matrix_of("scifact_test", columns), score, test_qrels)
    for corpus in ("news", "scifact"):
        best = [grade(x).max() if len(x) else 0.0 for x, _, _ in matrix_of(f"off_topic_{corpus}", columns)]
        report[f"off_topic_{corpus}_nothing"] = round(float(np.mean(np.array(best) < floor)), 3)
    for name in ("61", "test", "scifact_test"):
        kept = []
        for x, y, docs in matrix_of(name, columns):
            s = grade(x)
            order = np.lexsort((np.arange(len(s)), -s))[:10]
            answer = next((s[i] for i in order if y[i]), None)
            if answer is not None:
                kept.append(answer >= floor)
        report[f"{name}_kept"] = round(float(np.mean(kept)), 3)
    return report


def arguments(description: str) -> argparse.ArgumentParser:
    """The options this script and bench/designs.py share: the dataset, the evidence cache, the
    floor and the JSON file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "semsearch-scorer")
    parser.add_argument("--floor", type=float, default=0.1)
    parser.add_argument("--json", type=Path)
    return parser


def packaged_model() -> tuple:
    """The packaged model at this CPU's default precision, the precision, and the report's header."""
    from indexer.model.cpu import read_cpu
    from indexer.model.embedding import default_precision, light_model_for

    precision = default_precision()
    model = light_model_for(precision=precision)
    return model, precision, {"cpu": read_cpu().describe(), "model": model.name, "precision": precision}


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    args = parser.parse_args()
    model, precision, header = packaged_model()
    report = {**header, "inputs": {}}
    scorers = {"cosine": ("cosine",), "cosine+keyword": ("cosine", "keyword"),
               "passage": ("cosine", "sentence", "keyword"),
               "passage+title": ("cosine", "sentence", "keyword", "title", "title_keyword"),
               "all": FEATURES + DERIVED}
    for passage_input in args.inputs:
        tables = cached_tables(passage_input, model, precision, args.scifact, args.cache)
        results = {}
        for label, columns in [*scorers.items(), *((f"{label}, shipped way", columns) for label, columns in scorers.items()
                                                   if label in ("cosine+keyword", "passage"))]:
            bias, weights = (fit_shipped_way if label.endswith("shipped way") else fit)(tables, columns)
            figures = evaluate(tables, columns, lambda x, b=bias, w=weights: relevance(b, w, x), args.floor, args.scifact)
            results[label] = {"bias": round(bias, 3), "weights": dict(zip(columns, np.round(weights, 3).tolist())),
                              **figures}
            print(passage_input, label, results[label], flush=True)
        report["inputs"][passage_input] = results
    emit(report, args.json)


if __name__ == "__main__":
    main()
