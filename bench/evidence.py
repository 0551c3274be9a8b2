"""Which evidence puts the right paragraph first: what the model sees of a passage, and how the
evidence is combined into one score.

    .venv/bin/python bench/evidence.py --json bench/results/evidence.json

For each passage input (the article title and section heading before the text, as indexes are
built today; the section heading alone; the text alone) it builds an index of the project's
articles (seeds/, tests/questions/articles, tests/questions/news/articles: 28 articles) with the
packaged model at the CPU's default precision. For every question of three sets (the 61 of
tests/questions/questions.jsonl, and the news fit and test halves) it reads the dense and keyword
lists 200 deep and takes, for each passage either list found, five pieces of evidence: its
cosine, its best sentence's cosine, its keyword share (BM25 over the query's keyword weight),
its article title's cosine and the title's keyword share. It reports paragraph hit@1 and hit@3
for today's fused order, the cosine alone, and linear scores whose weights are chosen on the fit
half alone (a grid; the best three), so the test half and the 61 are never used for choosing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

SETS = {"61": "tests/questions/questions.jsonl", "fit": "tests/questions/news/fit.jsonl",
        "test": "tests/questions/news/test.jsonl"}
FOLDERS = ("seeds", "tests/questions/articles", "tests/questions/news/articles")
INPUTS = {"title+section": lambda title, section: (title, section), "section": lambda title, section: ("", section),
          "text": lambda title, section: ("", "")}
EVIDENCE = ("cosine", "sentence", "keyword", "title", "title_keyword")
GRID = [w for w in itertools.product((0, .25, .5, 1), (0, .25, .5, 1), (0, .1, .2, .3, .5), (0, .1, .2, .35),
                                     (0, .1, .2)) if w[0] + w[1] > 0]


def candidates(searcher, reader, question, titles, title_terms) -> list[tuple]:
    """(passage id, fused position, answers?, evidence...) of every passage either list found."""
    from indexer.search import fuse

    vector, terms = searcher.embed_query(question.text), searcher.analyzer.query_terms(question.text)
    dense, sparse = searcher.lists(vector, terms, 200, None, False)
    weights = reader.term_weights(terms) if terms else {}
    total = searcher.keyword_total(terms, weights)
    fused = {i: -n for n, (i, _) in enumerate(fuse([(dense, searcher.fusion.dense_weight),
                                                    (sparse, searcher.fusion.keyword_weight)], searcher.fusion))}
    cosines, keywords = dict(dense), dict(sparse)
    ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in sparse]))
    stored = reader.fetch(ids)
    rows = []
    for i in ids:
        passage, sentences = stored[i].passage, stored[i].sentence_vectors
        cosine = cosines.get(i, dense[-1][1])
        best_sentence = float((sentences @ vector).max()) if len(sentences) else cosine
        keyword = min(keywords.get(i, 0.0) / total, 1.0) if total else 0.0
        title = float(titles[passage.doc_id] @ vector)
        title_keyword = sum(weights.get(t, 0) for t in set(terms) if t in title_terms[passage.doc_id]) / total \
            if total else 0.0
        answers = passage.doc_id in question.doc_ids and any(a in passage.text for a in question.answers)
        rows.append((i, fused.get(i, -10**6), answers, float(cosine), best_sentence, float(keyword), title,
                     float(title_keyword)))
    return rows


def hits(table: list[list[tuple]], score) -> dict:
    """Paragraph hit@1 and hit@3 when each question's candidates are ordered by score (ties by id)."""
    first = third = 0
    for rows in table:
        order = sorted(rows, key=lambda r: (-score(r), r[0]))
        first += order[0][2]
        third += any(r[2] for r in order[:3])
    return {"hit@1": round(first / len(table), 3), "hit@3": round(third / len(table), 3)}


def evidence_tables(passage_input: str, model) -> dict[str, list[list[tuple]]]:
    from indexer import chunking
    from indexer.build import build_from_documents
    from indexer.documents import read_folder
    from indexer.engine import open_engine
    from indexer.questions import read_questions
    from indexer.search import Searcher

    original = chunking.context_of
    chunking.context_of = lambda title, section: original(*INPUTS[passage_input](title, section))
    try:
        documents = [d for folder in FOLDERS for d in read_folder(ROOT / folder)]
        with tempfile.TemporaryDirectory(prefix="semsearch-evidence-") as work:
            build_from_documents(documents, Path(work) / "index", model, progress=False)
            engine = open_engine(Path(work) / "index", model.name, model.dimension)
            reader = engine.reader()
            searcher = Searcher(reader, model)
            titles = {d.doc_id: model.embed_query(d.title) for d in documents}
            title_terms = {d.doc_id: set(searcher.analyzer.terms(d.title)) for d in documents}
            tables = {name: [candidates(searcher, reader, q, titles, title_terms) for q in read_questions(ROOT / path)]
                      for name, path in SETS.items()}
            engine.close()
    finally:
        chunking.context_of = original
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from indexer.cpu import read_cpu
    from indexer.embedding import default_precision, light_model_for

    model = light_model_for(precision=default_precision())
    report = {"cpu": read_cpu().describe(), "model": model.name, "inputs": {}}
    for passage_input in args.inputs:
        started = time.perf_counter()
        tables = evidence_tables(passage_input, model)
        scorers = {"fused (today)": lambda r: r[1], "cosine": lambda r: r[3]}
        chosen = sorted(GRID, key=lambda w: tuple(-v for v in hits(tables["fit"], linear(w)).values()))[:3]
        for weights in chosen:
            scorers["linear " + ", ".join(f"{n} {v:g}" for n, v in zip(EVIDENCE, weights) if v)] = linear(weights)
        results = {label: {name: hits(table, score) for name, table in tables.items()} for label, score in scorers.items()}
        report["inputs"][passage_input] = {"results": results, "seconds": round(time.perf_counter() - started, 1)}
        print(f"\n{passage_input}:\n| scorer | 61 hit@1 / hit@3 | fit | test |\n|---|---|---|---|")
        for label, found in results.items():
            print(f"| {label} | " + " | ".join(f"{found[n]['hit@1']:.3f} / {found[n]['hit@3']:.3f}" for n in SETS) + " |")
    emit(report, args.json)


def linear(weights):
    return lambda r: sum(w * e for w, e in zip(weights, r[3:]))


if __name__ == "__main__":
    main()
