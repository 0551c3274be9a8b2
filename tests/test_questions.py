"""`semsearch eval` on a question file: hit@1, hit@3 and MRR@10 of the project's own question set
(tests/questions: the seed article and four short news articles), checked against the ranks the
search itself returns, and clear errors for question files that cannot be scored."""

from __future__ import annotations

import json

import pytest

from indexer.eval.questions import DEPTH, interval, read_questions
from indexer.search.searcher import Query
from tests.conftest import QUESTIONS, SEEDS, searcher_of, semsearch


# The tests that read `report` run on one worker, which runs the eval once (--dist loadgroup).
ON_REPORT = pytest.mark.xdist_group("questions-report")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("questions") / "report.json"
    result = semsearch("eval", str(QUESTIONS / "questions.jsonl"), "--documents", str(SEEDS),
                       "--documents", str(QUESTIONS / "articles"), "--json", str(out))
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_the_question_set_is_large_and_varied_enough():
    questions = read_questions(QUESTIONS / "questions.jsonl")
    assert len(questions) >= 40
    per_article = {}
    for q in questions:
        per_article[q.doc_id] = per_article.get(q.doc_id, 0) + 1
    assert len(per_article) >= 4 and min(per_article.values()) >= 8
    assert sum(len(q.text.split()) <= 3 for q in questions) >= 4  # short keyword queries


def test_the_news_set_is_split_by_article_into_a_fit_and_a_test_half():
    """tests/questions/news: articles of many layouts and topics, questions split by article, so
    nothing chosen on the fit half has seen an article of the test half."""
    news = QUESTIONS / "news"
    halves = {half: read_questions(news / f"{half}.jsonl") for half in ("fit", "test")}
    articles = {half: {d for q in questions for d in q.doc_ids} for half, questions in halves.items()}
    assert sum(map(len, halves.values())) >= 200 and len(articles["fit"] | articles["test"]) >= 20
    assert not articles["fit"] & articles["test"]
    assert {p.stem for p in (news / "articles").glob("*.txt")} == articles["fit"] | articles["test"]
    texts = {p.stem: p.read_text(encoding="utf-8") for p in (news / "articles").glob("*.txt")}
    for q in halves["fit"] + halves["test"]:  # each answer in the words of one of its articles
        assert all(any(a in texts[d] for d in q.doc_ids) for a in q.answers), q
    assert any(len(q.doc_ids) > 1 for q in halves["fit"])  # one story from two outlets: either answers


@ON_REPORT
def test_eval_reports_hit_rates_for_every_mode_and_names_the_misses(report):
    printed, values = report
    assert values["questions"] == len(read_questions(QUESTIONS / "questions.jsonl"))
    assert set(values["results"]) == {"hybrid", "dense", "keyword"}
    for mode, figures in values["results"].items():
        assert f"| {mode} |" in printed
        assert 0 <= figures["hit@1"] <= figures["hit@3"] <= 1
        assert figures["hit@1"] <= figures["mrr@10"] <= figures["hit@3"] + (1 - figures["hit@3"]) / 4
        # the first passage answering shows in its article's group; that group is then the answer's
        assert figures["hit@1"] <= figures["article_hit@1"] <= figures["article_first"] <= 1
        assert len(figures["misses"]) == round((1 - figures["hit@1"]) * values["questions"])
        for name, (low, high) in figures["intervals"].items():  # each share within its interval
            assert 0 <= low <= figures[name] <= high <= 1, (mode, name)
    hybrid = values["results"]["hybrid"]
    assert f"95 % intervals (hybrid; Wilson, {values['questions']} questions" in printed
    low, high = hybrid["intervals"]["hit@1"]
    assert f"hit@1 {low:.3f}-{high:.3f}" in printed
    for miss in hybrid["misses"]:
        assert f"line {miss['line']}: {miss['question']!r}" in printed


@ON_REPORT
def test_eval_figures_match_the_ranks_search_returns(report, tmp_path):
    """The report's hybrid figures recomputed from plain searches of an index of the same articles."""
    from indexer.index.build import build_from_documents
    from indexer.text.documents import read_folder
    from indexer.model.embedding import default_precision, light_model_for

    model = light_model_for(precision=default_precision())  # what `semsearch eval` builds a new index with
    documents = list(read_folder(SEEDS)) + list(read_folder(QUESTIONS / "articles"))
    build_from_documents(documents, tmp_path / "index", model, progress=False)
    searcher = searcher_of(tmp_path / "index", model)
    ranks, leads = [], []
    for q in read_questions(QUESTIONS / "questions.jsonl"):
        hits = searcher.search(Query(q.text, k=DEPTH, min_relevance=0))  # the ranking, nothing left out
        ranks.append(next((n for n, h in enumerate(hits, 1) if h.passage.doc_id == q.doc_id
                           and any(a in h.passage.text for a in q.answers)), None))
        leads.append(searcher.search(Query(q.text, k=1, group="article", min_relevance=0))[0].passage.doc_id
                     in q.doc_ids)
    hybrid = report[1]["results"]["hybrid"]
    assert hybrid["article_first"] == round(sum(leads) / len(leads), 4)
    assert hybrid["hit@1"] == round(sum(r == 1 for r in ranks) / len(ranks), 4)
    assert hybrid["hit@3"] == round(sum(r is not None and r <= 3 for r in ranks) / len(ranks), 4)
    assert hybrid["mrr@10"] == round(sum(1 / r for r in ranks if r) / len(ranks), 4)


def test_an_interval_narrows_as_questions_are_added():
    """The same share of 20 questions and of 200: the larger set pins it down about three times as
    closely (Wilson, 95 %), and a share of none or all still has room on its open side."""
    few, many = interval(18, 20), interval(180, 200)
    assert few[0] < many[0] < 0.9 < many[1] < few[1]
    assert 2.5 < (few[1] - few[0]) / (many[1] - many[0]) < 3.5
    assert interval(0, 20)[0] == 0 and interval(0, 20)[1] > 0.1
    assert interval(20, 20)[1] == 1 and interval(20, 20)[0] < 0.9


@pytest.mark.parametrize("line, error", [
    ('{"question": "how many casualties", "doc_id": "putin-committed-to-war-in-ukraine", '
     '"answers": ["two million casualties"]}', "no passage of 'putin-committed-to-war-in-ukraine' contains"),
    ('{"question": "how many casualties", "doc_id": "no-such-article", "answers": ["casualties"]}',
     "document 'no-such-article' is not in the index"),
    ('{"question": "how many casualties", "doc_id": "putin-committed-to-war-in-ukraine"}', '"answers" must be'),
    ('{"question": "", "doc_id": "x", "answers": ["y"]}', '"question" must be'),
    ("how many casualties", "not JSON"),
])
def test_a_question_that_cannot_be_scored_is_named_by_its_line(tmp_path, line, error):
    good = '{"question": "drones", "doc_id": "putin-committed-to-war-in-ukraine", "answer": "drone production"}'
    questions = tmp_path / "mine.jsonl"
    questions.write_text(f"{good}\n\n{line}\n")
    result = semsearch("eval", str(questions), "--documents", str(SEEDS))
    assert result.returncode == 2
    assert "mine.jsonl:3: " in result.stderr and error in result.stderr
    assert "Traceback" not in result.stderr


# Answered first since page furniture stopped being section headings and question words stopped
# counting as keywords; before, each was at rank 2-5. Two left the list when the set as a whole rose:
# "which bus lines change" when keyword scores became each passage's own (its answer says "Buses",
# so only "change" matches), and "what is wrong with the bridge" (rank 3) when hybrid results came
# to be ordered by their relevance (hit@1 0.590 -> 0.656, hit@3 0.836 -> 0.918).
FIXED = ["how much will the repairs cost", "who pays for the rebuild", "what did Trump offer Putin",
         "who is helping Russia", "is the bridge rusting"]


@ON_REPORT
def test_the_fixed_questions_are_answered_first_and_the_set_does_not_slip_back(report):
    hybrid = report[1]["results"]["hybrid"]
    missed = {m["question"]: m["rank"] for m in hybrid["misses"]}
    assert {q: missed[q] for q in FIXED if q in missed} == {}
    # Today's figures: 0.656 / 0.918 at int8-static on AVX-512 VNNI (0.590 / 0.836 in the fused order).
    assert hybrid["hit@1"] >= 0.6 and hybrid["hit@3"] >= 0.85  # other CPUs run other precisions
