"""How well `relevance` tells a real answer from nothing: off-topic queries against real ones.

    .venv/bin/python bench/relevance.py --scifact "$SCIFACT" --index scifact-fp32 --fit

Two indexes at --precision (fp32 by default; the packaged model ships weights fitted at fp32, which
every CPU class but AVX-512 VNNI builds at, and at int8-static, which VNNI machines build at; --ship
writes them for the precision): the news one (seeds/,
the question articles of tests/questions/articles and the news questions' articles of
tests/questions/news/articles, built in a scratch folder) and SciFact's (built into --index, or
brought up to date there). Every query is searched with nothing left out (min_relevance=0, the
fused list's 200), and each hit keeps its evidence (dense cosine, keyword share, late interaction):

- off-topic: tests/questions/off_topic.txt against both indexes; a query "gets no result" when
  no hit of its whole list reaches the floor (the issue's target: at least 95 %); and the same
  for tests/questions/off_topic_held_out.txt, which no fit reads (the off-topic figures out of
  sample);
- real: the question set (tests/questions/questions.jsonl), the news questions' test half and
  SciFact test's queries; of those whose answer is in the first 10 (the question's answering
  passage; a judged SciFact article, by its best passage), the share whose answer reaches the
  floor (target: at least 97 %).

Reports these at RelevanceParams' weights for a range of floors. --fit refits the weights on
training data only, SciFact *train*'s judged answers (its first 10 articles) and the news
questions' fit half's answers (indexer/search/relevance.py, fit): the first stage a logistic
regression of the answers' (cosine, keyword share) against each off-topic query's best hit's,
classes weighted equally; the late stage for each kind of query (SciFact's claims are
statements, the news questions questions) its order from the answers against their other
graded-again hits, its scale from the answers against the off-topic queries' best hits of that
kind; then the weak grade's floor that best separates the fit half's answers from the off-topic
queries' best hits on the news index. The figures then use the fitted weights.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.engines.faiss import store  # noqa: E402
from indexer.eval.beir import read_corpus, read_qrels, read_queries  # noqa: E402
from indexer.index.build import build_from_documents, build_from_folder  # noqa: E402
from indexer.model.embedding import light_model_for  # noqa: E402
from indexer.model.onnx_encoder import PRECISIONS  # noqa: E402
from indexer.eval.questions import read_off_topic, read_questions  # noqa: E402
from indexer.search.relevance import (LATE, SHIPPED, Asked, RelevanceParams, answer_relevance, asked,  # noqa: E402
                                      best_relevance, fit, kind_of, relevance_for, shipped_name, with_floor)
from indexer.search.searcher import Query, Searcher  # noqa: E402

OFF_TOPIC = ROOT / "tests" / "questions" / "off_topic.txt"
HELD_OUT = ROOT / "tests" / "questions" / "off_topic_held_out.txt"  # measured only, never fitted on
QUESTIONS = ROOT / "tests" / "questions" / "questions.jsonl"
NEWS = ROOT / "tests" / "questions" / "news"
ARTICLES = (ROOT / "seeds", ROOT / "tests" / "questions" / "articles", NEWS / "articles")
DEPTH = 200
FLOORS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7)


def every_hit(searcher: Searcher, text: str, **options) -> list:
    return searcher.search(Query(text, k=DEPTH, min_relevance=0, **options))


def off_topic_evidence(searcher: Searcher, queries: list[str]) -> list[Asked]:
    """Per query: its kind and the (cosine, keyword share, late interaction) of every hit."""
    return [asked(every_hit(searcher, q), kind_of(q)) for q in queries]


def question_evidence(searcher: Searcher, path: Path = QUESTIONS) -> list[Asked]:
    """Each question whose answer is in the first 10: its hits, and which answer it."""
    found = []
    for q in read_questions(path):
        hits = every_hit(searcher, q.text)
        if any(q.answered_by(h) for h in hits[:10]):
            found.append(asked(hits, kind_of(q.text), q.answered_by))
    return found


def scifact_evidence(searcher: Searcher, dataset: Path, split: str) -> list[Asked]:
    """Each query with a judged article among its first 10 articles: its hits (an article's best
    passage each), and which are judged."""
    qrels, queries = read_qrels(dataset, split), read_queries(dataset)
    found = []
    for query_id, judged in qrels.items():
        hits = every_hit(searcher, queries[query_id], group="document")
        if any(judged.get(h.passage.doc_id, 0) > 0 for h in hits[:10]):
            found.append(asked(hits, kind_of(queries[query_id]), lambda h: judged.get(h.passage.doc_id, 0) > 0))
    return found


def news_searcher(scratch: Path, model, params: RelevanceParams) -> Searcher:
    """A searcher of every news article the question sets ask about (ARTICLES), indexed in scratch."""
    folder = scratch / "news"
    folder.mkdir()
    for source in [item for articles in ARTICLES for item in sorted(articles.iterdir())]:
        (folder / source.name).write_bytes(source.read_bytes())
    build_from_folder(folder, scratch / "index", model, progress=False)
    return Searcher(store.load(scratch / "index", model.name, model.dimension), model, relevance=params)


def figures(params: RelevanceParams, floor: float, off_topic: dict[str, list[Asked]],
            real: dict[str, list[Asked]]) -> dict:
    report = {}
    for name, per_query in off_topic.items():
        best = best_relevance(params, per_query)
        report[f"off_topic_{name}_no_result"] = round(float((best < floor).mean()), 4)
        report[f"off_topic_{name}_answered"] = int((best >= floor).sum())
    for name, answered in real.items():
        report[f"{name}_kept"] = round(float((answer_relevance(params, answered) >= floor).mean()), 4)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="SciFact's index (built there when absent)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--fit", action="store_true", help="refit the weights")
    parser.add_argument("--ship", action="store_true", help="with --fit: write them into indexer/relevance.json "
                                                             "as the model's shipped weights")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = light_model_for(None, precision=args.precision)
    build_from_documents(read_corpus(args.scifact), args.index, model, False, str(args.scifact))
    params = relevance_for(model.name)[0]
    if not params.late:  # weights fitted before late interaction: its stage is fitted too
        params = replace(params, **{name: getattr(RelevanceParams(), name) for name in LATE})
    scifact = Searcher(store.load(args.index, model.name, model.dimension), model, relevance=params)
    queries = read_off_topic(OFF_TOPIC)
    with tempfile.TemporaryDirectory(prefix="semsearch-relevance-") as scratch:
        news = news_searcher(Path(scratch), model, params)
        off_topic = {"news": off_topic_evidence(news, queries), "scifact": off_topic_evidence(scifact, queries)}
        held_out = read_off_topic(HELD_OUT)
        held_out_evidence = {"held_out_news": off_topic_evidence(news, held_out),
                             "held_out_scifact": off_topic_evidence(scifact, held_out)}
        real = {"questions": question_evidence(news), "news_test": question_evidence(news, NEWS / "test.jsonl"),
                "scifact_test": scifact_evidence(scifact, args.scifact, "test")}
        news_fit = question_evidence(news, NEWS / "fit.jsonl")
    off_topic["both"] = off_topic["news"] + off_topic["scifact"]
    report: dict = {"model": model.name, "off_topic_queries": len(queries), "held_out_off_topic_queries": len(held_out),
                    "answered_in_10": {name: len(rows) for name, rows in real.items()}}
    if args.fit:
        params = fit(scifact_evidence(scifact, args.scifact, "train") + news_fit, off_topic["both"], params)
        # the weak grade's floor (the default min_relevance) that best tells news answers (the fit
        # half's) from the off-topic queries' best hits on the news index, as `semsearch calibrate`
        # chooses it: SciFact's answers, most of the positives, would set it for abstracts
        params = with_floor(params, answer_relevance(params, news_fit), best_relevance(params, off_topic["news"]))
        if args.ship:
            shipped = json.loads(SHIPPED.read_text())
            shipped[shipped_name(model.name)] = {**params.record(), "fitted_on": "SciFact train's judged answers and the news "
                                              "questions' fit half's answers against their other hits and the off-topic "
                                              "queries' best hits (bench/relevance.py --fit)"}
            SHIPPED.write_text(json.dumps(shipped, indent=2) + "\n")
    report["params"] = params.record()
    off_topic.update(held_out_evidence)  # measured with the others, after the fit
    report["by_floor"] = {str(floor): figures(params, floor, off_topic, real) for floor in sorted({*FLOORS, params.weak})}
    report["no_strong_match"] = {name: figures(params, params.strong, {name: rows}, {})[f"off_topic_{name}_no_result"]
                                 for name, rows in off_topic.items()}
    emit(report, args.json)


if __name__ == "__main__":
    main()
