"""An absolute relevance: off-topic queries find no good match, real questions keep their answers,
and the grade is what the API, the command line, facets and sorting count by (the real model)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.index.build import build_from_folder
from indexer.eval.questions import read_off_topic, read_questions
from indexer.search.relevance import (CALIBRATION, NO_LATE, Asked, LateWeights, RelevanceParams, fit, kind_of,
                                      relevance_for, shown, weights_from)
from indexer.search.searcher import Query, Searcher
from indexer.settings import Settings
from service.app import create_app
from tests.conftest import QUESTIONS, SEEDS, STAND_IN, searcher_of, semsearch

NONSENSE = "flibbertigibbet zorkmid quux"


@pytest.fixture(scope="module")
def news_index(tmp_path_factory, embedder):
    """The seed article and the question articles: five news stories."""
    folder = tmp_path_factory.mktemp("news")
    for source in [*SEEDS.iterdir(), *(QUESTIONS / "articles").iterdir()]:
        shutil.copy(source, folder / source.name)
    index = tmp_path_factory.mktemp("news-index")
    build_from_folder(folder, index, embedder, progress=False)
    return index


@pytest.fixture(scope="module")
def news(news_index, embedder) -> Searcher:
    return searcher_of(news_index, embedder)


def test_off_topic_queries_find_no_good_match(news):
    queries = read_off_topic(QUESTIONS / "off_topic.txt")
    assert len(queries) >= 60
    answered = [q for q in queries if not news.answer(Query(q)).no_good_match]
    assert len(answered) <= 0.05 * len(queries), answered  # measured: none of 63


def test_held_out_off_topic_queries_find_no_good_match(news):
    """Off-topic queries no fit has read (the weights and floors were fitted before they were
    written): the target holds out of sample too."""
    queries = read_off_topic(QUESTIONS / "off_topic_held_out.txt")
    assert len(queries) >= 60 and not set(queries) & set(read_off_topic(QUESTIONS / "off_topic.txt"))
    answered = [q for q in queries if not news.answer(Query(q)).no_good_match]
    assert len(answered) <= 0.05 * len(queries), answered  # measured: 1 of 66 at int8-static and at fp32


def test_real_questions_keep_their_answers(news):
    """Of the questions whose answer is in the first 10, the share still shown at the default floor.
    Measured 0.87 on these five articles at int8-static and 0.93 at fp32 (0.97 and 0.98 on the
    news questions' test half; docs/benchmarks.md, "Where the targets stand"): for some paraphrased
    questions the model finds as little as for off-topic ones; this pins that level (the target
    is 0.97)."""
    kept = []
    for q in read_questions(QUESTIONS / "questions.jsonl"):
        answer = next((h for h in news.search(Query(q.text, min_relevance=0)) if q.answered_by(h)), None)
        if answer is not None:
            shown = news.search(Query(q.text, k=50))
            kept.append(any(h.passage.passage_id == answer.passage.passage_id for h in shown))
    assert len(kept) >= 55 and sum(kept) / len(kept) >= 0.85, sum(kept) / len(kept)


def test_a_filter_that_rules_out_the_only_answer_says_so(news):
    found = news.answer(Query("will there be power cuts during the heatwave"))
    assert found.hits[0].match == "strong" and found.hits[0].passage.doc_id == "heatwave-power-grid"
    elsewhere = news.answer(Query("will there be power cuts during the heatwave", doc_ids=("old-quay-bridge-closure",)))
    assert elsewhere.no_good_match and elsewhere.hits == []
    anyway = news.answer(Query("will there be power cuts during the heatwave", doc_ids=("old-quay-bridge-closure",),
                               min_relevance=0))
    assert anyway.hits and not anyway.no_good_match and all(h.match == "none" for h in anyway.hits)


def test_relevance_is_one_scale_whatever_the_mode_or_page(news):
    """Both lists feed the relevance in every mode, so a passage's relevance does not depend on
    how the page was ranked, and grades follow the documented thresholds."""
    params = news.relevance
    by_mode = {mode: {h.passage.passage_id: h.relevance for h in
                      news.search(Query("how old is the bridge", k=50, mode=mode, min_relevance=0))}
               for mode in ("hybrid", "dense", "keyword")}
    for passage_id, relevance in by_mode["keyword"].items():
        assert by_mode["hybrid"][passage_id] == pytest.approx(relevance) == by_mode["dense"][passage_id]
    for hit in news.search(Query("how old is the bridge", k=50, min_relevance=0)):
        assert hit.match == ("strong" if hit.relevance >= params.strong else
                             "weak" if hit.relevance >= params.weak else "none")
    shown = news.search(Query("how old is the bridge", k=50))
    assert shown and all(h.relevance >= params.weak for h in shown)
    assert [h.rank for h in shown] == list(range(1, len(shown) + 1))


def test_facets_and_newest_count_only_the_matches(news):
    nothing = news.answer(Query(NONSENSE, facets=("outlet", "month"), sort="newest"))
    assert nothing.no_good_match and nothing.facets == {"outlet": [], "month": []}
    matches = news.search(Query("heatwave electricity demand", k=50))
    newest = news.search(Query("heatwave electricity demand", k=50, sort="newest"))
    assert {h.passage.passage_id for h in newest} == {h.passage.passage_id for h in matches}
    assert all(h.passage.doc_id == "heatwave-power-grid" for h in matches)


def test_the_api_and_the_command_line_say_no_good_match(news_index):
    with TestClient(create_app(Settings(index_dir=news_index, reload_interval=0))) as client:
        body = client.get("/search", params={"q": NONSENSE}).json()
        assert body["results"] == [] and body["no_good_match"] is True
        every = client.get("/search", params={"q": NONSENSE, "min_relevance": 0, "k": 3}).json()
        assert len(every["results"]) == 3 and every["no_good_match"] is False
        assert all(r["match"] == "none" and r["relevance"] < 0.1 for r in every["results"])
        bad = client.get("/search", params={"q": "bridge", "min_relevance": 1.5})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "min_relevance"
        for name in ("min_relevance", "recency_half_life_days"):  # JSON types: a boolean is not a number
            assert client.post("/search", json={"q": "bridge", name: False if name == "min_relevance" else True}
                               ).status_code == 422
    printed = semsearch("search", NONSENSE, "--index", str(news_index))
    assert printed.returncode == 0 and printed.stdout.startswith(f"no good match: nothing in {news_index}/ answers")
    assert "--min-relevance 0" in printed.stdout
    as_json = json.loads(semsearch("search", NONSENSE, "--index", str(news_index), "--json").stdout)
    assert as_json["no_good_match"] is True and as_json["results"] == [] and as_json["index"] == f"{news_index}/"
    refused = semsearch("search", "bridge", "--index", str(news_index), "--min-relevance", "2")
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr


def test_the_weights_come_from_the_index_calibration_else_the_shipped_ones(tmp_path):
    packaged, warning = relevance_for("sentence-transformers/all-MiniLM-L6-v2@int8-static-a889e78e", tmp_path)
    assert packaged.fitted == "packaged" and packaged.floor == packaged.weak and warning is None
    other, _ = relevance_for("hashing", tmp_path)
    assert other.fitted is None and other.floor == 0
    fp32, _ = relevance_for("sentence-transformers/all-MiniLM-L6-v2", tmp_path)  # a model without weights orders
    assert replace(fp32, weak=RelevanceParams.weak, fitted=None) == other != packaged  # by the fp32 ones
    (tmp_path / CALIBRATION).write_text(json.dumps({"model": "hashing", "bias": -3, "cosine_weight": 9,
                                                    "keyword_weight": 4, "strong": 0.6, "weak": 0.2}))
    calibrated, warning = relevance_for("hashing", tmp_path)
    assert calibrated == RelevanceParams(-3, 9, 4, 0.6, 0.2, fitted=str(tmp_path / CALIBRATION), **NO_LATE)
    assert warning is None and not calibrated.late  # fitted before late interaction: graded without it
    for broken, said in (('{"model": "another/model", "bias": 1, "cosine_weight": 1, "keyword_weight": 1, "strong": 1, '
                          '"weak": 1}', "fitted for the model 'another/model'"),
                         ('{"model": "hashing", "bias": "high"}', "need numbers"), ("{not json", "cannot be read")):
        (tmp_path / CALIBRATION).write_text(broken)
        params, warning = relevance_for("hashing", tmp_path)
        assert params.fitted is None and said in warning and "semsearch calibrate" in warning


def test_a_query_is_a_question_or_a_statement():
    """A question or a few keywords take the news questions' weights; a sentence that states
    something (as SciFact's claims do) the statements'."""
    for text in ("why won't Russia stop", "Won\u2019t the bridge reopen", "how many soldiers died", "is the flood a record",
                 "on how many days did it break the rules", "the bridge will close for two years?", "Who",
                 "Kremlin escalation", "death toll", "speed limit outside schools", "", "   "):
        assert kind_of(text) == "question", text
    for text in ("0-dimensional biomaterials show inductive properties.", "DUSP4 decreases apoptosis.",
                 "power plants shut for maintenance", "the council voted to close the bridge for two years"):
        assert kind_of(text) == "statement", text


def test_weights_files_of_every_format_read_back():
    """The weights as written now (a late stage for each kind of query), as written before the kinds
    (one late stage: it serves both, without the cosine) and before late interaction (none)."""
    now = RelevanceParams(-3, 9, 4, 0.6, 0.2, late_question=LateWeights(-9, 17, 5, 2),
                          late_statement=LateWeights(-17, 13, 22, 18))
    assert weights_from(json.loads(json.dumps(now.record())), "f") == replace(now, fitted="f")
    one = {"bias": -3, "cosine_weight": 9, "keyword_weight": 4, "strong": 0.6, "weak": 0.2,
           "late_bias": -10, "late_weight": 18, "late_keyword_weight": 7}
    both = LateWeights(-10, 18, 0, 7)
    assert weights_from(one, "f") == RelevanceParams(-3, 9, 4, 0.6, 0.2, "f", late_question=both, late_statement=both)
    broken = {**now.record(), "late_statement": {"bias": 1, "late": "x", "cosine": 1, "keyword": 1}}
    with pytest.raises(ValueError, match="late_statement"):
        weights_from(broken, "f")
    with pytest.raises(ValueError, match="late_question"):
        weights_from({key: value for key, value in now.record().items() if key != "late_question"} |
                     {"late_question": [1, 2]}, "f")


def test_the_late_stage_is_fitted_for_each_kind_of_query_from_its_own_questions():
    """Questions whose answers stand out by late interaction, statements whose answers stand out by
    cosine: each kind's weights put its own answers first, and rank them above the off-topic queries'
    best hits; a kind with nothing to fit on keeps its weights."""
    rng = np.random.default_rng(0)

    def hits(kind: str, answered: bool) -> Asked:
        rows = np.c_[rng.uniform(0.2, 0.5, 40), rng.uniform(0, 0.3, 40), rng.uniform(0.3, 0.5, 40)]
        rows[30:, 2] = np.nan  # graded again: the first 30
        if answered:
            rows[3, 2 if kind == "question" else 0] += 0.4
        return Asked(kind, rows, (3,) if answered else ())

    answered = [hits(kind, True) for kind in ("question", "statement") for _ in range(30)]
    off_topic = [hits(kind, False) for kind in ("question", "statement") for _ in range(20)]
    fitted = fit(answered, off_topic, RelevanceParams())
    assert fitted.late_question.late > 3 * abs(fitted.late_question.cosine)
    assert fitted.late_statement.cosine > 3 * abs(fitted.late_statement.late)
    for asked in answered:
        relevance = shown(fitted, asked.rows, asked.kind)
        assert np.argmax(relevance) == 3
        assert relevance[3] > np.median([shown(fitted, a.rows, a.kind).max() for a in off_topic if a.kind == asked.kind])
    questions_only = fit([a for a in answered if a.kind == "question"], off_topic, RelevanceParams())
    assert questions_only.late_statement == RelevanceParams().late_statement


def test_a_model_the_relevance_was_not_fitted_for_keeps_every_hit(folder_index):
    """The weights fit the packaged model's cosines; with another model (the stand-in here) the
    floor is 0 unless asked, and results still carry a relevance and a grade."""
    printed = semsearch("search", NONSENSE, "--index", str(folder_index[1]), "--json", env=STAND_IN)
    results = json.loads(printed.stdout)["results"]
    assert printed.returncode == 0 and results and all("relevance" in r and r["match"] for r in results)


def test_results_by_article_show_each_article_once_with_its_next_best_passages(news):
    flat = news.search(Query("heatwave power demand and the grid", k=50))
    grouped = news.search(Query("heatwave power demand and the grid", k=10, group="article"))
    leads = [h.passage.doc_id for h in grouped]
    assert len(leads) == len(set(leads)) and [h.rank for h in grouped] == list(range(1, len(grouped) + 1))
    for lead in grouped:  # the article's best passage, then its other matches of highest relevance
        same = [h for h in flat if h.passage.doc_id == lead.passage.doc_id]
        assert lead.passage.passage_id == same[0].passage.passage_id
        best = sorted(same[1:], key=lambda h: -h.relevance)[:2]
        assert [m.passage.passage_id for m in lead.more] == [h.passage.passage_id for h in best]
        assert all(m.highlight.text and m.relevance >= news.relevance.weak for m in lead.more)
    assert grouped[0].passage.doc_id == "heatwave-power-grid" and len(grouped[0].more) == 2
    assert len(news.search(Query("heatwave power demand and the grid", k=1, group="article"))) == 1  # k counts articles


def test_results_by_article_over_http_and_in_the_terminal(news_index):
    with TestClient(create_app(Settings(index_dir=news_index, reload_interval=0))) as client:
        body = client.get("/search", params={"q": "bridge closure detour", "group": "article", "k": 2}).json()
        first = body["results"][0]
        assert first["doc_id"] == "old-quay-bridge-closure" and 1 <= len(first["more"]) <= 2
        assert all(m["doc_id"] == first["doc_id"] and m["highlight"] in m["text"] for m in first["more"])
        assert "more" not in client.get("/search", params={"q": "bridge closure detour"}).json()["results"][0]
        assert client.get("/search", params={"q": "bridge", "group": "story"}).status_code == 422
        # group=document ranks each article by its best passage in each list: nothing more to show
        for asked in ({"group": "document"}, {"group_by_doc": True}):  # the older name still answers
            documents = client.get("/search", params={"q": "bridge closure detour", **asked}).json()["results"]
            assert len({r["doc_id"] for r in documents}) == len(documents) and "more" not in documents[0]
        both = client.get("/search", params={"q": "bridge closure detour", "group": "article", "group_by_doc": True})
        assert both.json()["results"][0]["more"] == first["more"]  # group, when given, decides
    printed = semsearch("search", "bridge closure detour", "--index", str(news_index), "--group", "article", "-k", "1")
    assert printed.returncode == 0 and printed.stdout.startswith("1. ") and "\n   + [" in printed.stdout


@pytest.mark.xdist_group("news-questions")
def test_late_interaction_puts_the_answering_paragraph_first_on_the_news_test_half(tmp_path_factory, embedder):
    """The news questions' test half (never fitted on), over all 28 articles, with the real model:
    graded again with late interaction, the answering paragraph comes first for at least 0.75 of
    the questions and in the first three for 0.93 (measured 0.779 / 0.967 at int8-static on
    AVX-512 VNNI, 0.787 / 0.967 at fp32); the same index without the late stage: 0.648 / 0.853."""
    from indexer.index.build import build_from_documents
    from indexer.text.documents import read_folder

    folders = (SEEDS, QUESTIONS / "articles", QUESTIONS / "news" / "articles")
    index = tmp_path_factory.mktemp("late-interaction")
    build_from_documents([d for folder in folders for d in read_folder(folder)], index, embedder, progress=False)
    late = searcher_of(index, embedder)
    assert late.relevance.late
    pooled = Searcher(late.index, embedder, relevance=replace(late.relevance, **NO_LATE))
    questions = read_questions(QUESTIONS / "news" / "test.jsonl")

    def ranks(searcher):
        return [next((h.rank for h in searcher.search(Query(q.text, k=10, min_relevance=0)) if q.answered_by(h)), 99)
                for q in questions]

    with_late, without = ranks(late), ranks(pooled)
    first, third = (sum(r <= n for r in with_late) / len(questions) for n in (1, 3))
    assert first >= 0.74 and third >= 0.92, (first, third)
    assert first - sum(r == 1 for r in without) / len(questions) >= 0.05


@pytest.mark.xdist_group("news-questions")
def test_relevance_never_rises_down_a_hybrid_ranking_on_every_question(tmp_path_factory, embedder):
    """One score orders hybrid results and grades them: on every question of the three sets (the
    61, the news fit and test halves) and every off-topic query, over all their articles, a hit
    never shows more relevance than the one above it, and the relevance shown is what its evidence
    gives with the weights of the query's kind."""
    from indexer.index.build import build_from_documents
    from indexer.text.documents import read_folder

    folders = (SEEDS, QUESTIONS / "articles", QUESTIONS / "news" / "articles")
    index = tmp_path_factory.mktemp("all-questions")
    build_from_documents([d for folder in folders for d in read_folder(folder)], index, embedder, progress=False)
    searcher = searcher_of(index, embedder)
    questions = [q for name in ("questions.jsonl", "news/fit.jsonl", "news/test.jsonl")
                 for q in read_questions(QUESTIONS / name)]
    queries = [q.text for q in questions] + read_off_topic(QUESTIONS / "off_topic.txt")
    assert len(questions) >= 290 and len(queries) >= 340
    for text in queries:
        hits = searcher.search(Query(text, k=50, min_relevance=0))
        relevance = [h.relevance for h in hits]
        assert relevance == sorted(relevance, reverse=True), text
        # and it is the relevance its evidence gives with the weights of the query's kind
        rows = np.array([h.evidence for h in hits])
        assert np.allclose(relevance, shown(searcher.relevance, rows, kind_of(text))), text
