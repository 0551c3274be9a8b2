"""Answers on the seed article: the right passages first and the answering sentence marked."""

from __future__ import annotations

import pytest

from indexer.errors import QueryError
from indexer.search.searcher import FusionParams, Query, fuse, hit_record
from tests.conftest import searcher_of

HEADINGS = {"Why Russia Won’t Stop", "The Costs and Risks Ahead", "An Endgame Still Out of Reach"}


def test_why_wont_russia_stop_ranks_a_body_passage_with_the_reasons_first(searcher):
    top = searcher.search(Query("why won't Russia stop", k=5))[0]
    assert top.passage.text not in HEADINGS
    assert ("unwilling to end the war without clear political victories" in top.passage.text
            or "undermine his leadership" in top.passage.text)
    assert top.highlight.text in top.passage.text


def test_how_many_casualties_finds_the_million_casualties_passage_in_the_top_3(searcher):
    hits = searcher.search(Query("how many casualties", k=3))
    matching = [h for h in hits if "over a million casualties" in h.passage.text]
    assert matching
    assert "over a million casualties" in matching[0].highlight.text


def test_query_pieces_weigh_their_words_idf_and_reuse_what_the_keyword_list_read(searcher):
    from indexer.search.searcher import STOPWORD_PIECE_WEIGHT

    text = "how many casualties in the zorblatt war"
    _, pieces, spans = searcher.embed_query_pieces(text)
    terms = searcher.analyzer.piece_terms(text, [(int(a), int(b)) for a, b in spans])
    idf = searcher.index.term_weights(searcher.analyzer.query_terms(text))
    weights = searcher.piece_weights(text, spans)
    assert len(weights) == len(pieces) == len(terms)
    assert searcher.piece_weights(text, spans, idf).tolist() == weights.tolist()
    unseen = max(weights)  # "zorblatt" is in no passage: the highest idf there is
    for found, weight in zip(terms, weights):
        if not found:  # "in", "the", punctuation
            assert weight == STOPWORD_PIECE_WEIGHT
        elif found == ["zorblatt"]:
            assert weight == unseen > idf["casualti"] > STOPWORD_PIECE_WEIGHT
    # a term whose idf is known already is not looked up again
    told = searcher.piece_weights(text, spans, {**idf, "casualti": 42.0})
    assert {w for found, w in zip(terms, told) if found == ["casualti"]} == {42.0}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_every_mode_returns_ranked_hits_with_sources(searcher, mode):
    hits = searcher.search(Query("Putin refuses a cease-fire", k=5, mode=mode))
    assert hits and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        record = hit_record(hit)
        assert record["source"].endswith("putin-committed-to-war-in-ukraine.txt")
        assert record["highlight_start"] >= record["start"] and record["highlight_end"] <= record["end"]


def test_empty_query_is_a_query_error(searcher):
    with pytest.raises(QueryError):
        searcher.search(Query("   "))


def test_fusion_prefers_rows_that_both_lists_agree_on():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    sparse = [(3, 12.0), (1, 9.0), (4, 1.0)]
    rrf = FusionParams(method="rrf")
    assert [row for row, _ in fuse([(dense, 1.0), (sparse, 1.0)], rrf)] == [1, 3, 2, 4]
    # With the dense list nearly ignored, the keyword list's order wins.
    assert [row for row, _ in fuse([(dense, 0.1), (sparse, 1.0)], rrf)][:2] == [3, 1]


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_fusion_by_passage_ranks_as_fusion_by_any_key_does(method):
    """The default path (numpy, one item per passage) and the keyed one (documents when grouping)
    give the same scores and order, ties included, for any lists."""
    import random

    params = FusionParams(method=method)
    for trial in range(300):
        pick = random.Random(trial)
        lists = []
        for weight in (pick.choice([0.3, 0.5, 1.0]), 0.5):
            ids = pick.sample(range(300), pick.randint(0, 200))
            scores = sorted((pick.choice([pick.random(), 0.5, 0.25]) * 10 for _ in ids), reverse=True)
            lists.append((list(zip(ids, scores)), weight))
        assert fuse(lists, params) == fuse(lists, params, key=lambda row: row)


def test_convex_fusion_scales_each_list_to_0_1():
    dense = [(1, 0.9), (2, 0.5)]
    sparse = [(2, 20.0), (3, 10.0)]
    fused = dict(fuse([(dense, 0.5), (sparse, 0.5)], FusionParams(method="convex")))
    assert fused == pytest.approx({1: 0.5, 2: 0.5, 3: 0.0})


@pytest.fixture(scope="module")
def sections_searcher(tmp_path_factory, embedder):
    """The seed article cut into one document per section: a small multi-document index."""
    from indexer.index.build import build_from_documents
    from indexer.text.documents import Document
    from tests.conftest import SEED_FILE

    parts = SEED_FILE.read_text(encoding="utf-8").split("\n")
    cuts = [i for i, line in enumerate(parts) if line in HEADINGS] + [len(parts)]
    documents = [Document(doc_id=f"part{n}", title=parts[a], source=f"https://example.org/{n}",
                          text="\n".join(parts[a:b])) for n, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    out = tmp_path_factory.mktemp("sections")
    build_from_documents(documents, out, embedder, progress=False)
    return searcher_of(out, embedder)


def test_explain_gives_each_lists_rank_and_none_where_a_list_missed(searcher):
    hits = searcher.search(Query("drone production", k=12, min_relevance=0))  # every passage, matching or not
    assert all(h.dense is not None for h in hits)
    assert any(h.keyword is None for h in hits)  # passages without "drone" or "production"
    both = [h for h in hits if h.keyword is not None]
    assert both and all(h.keyword.rank >= 1 and h.keyword.score > 0 for h in both)
    record = hit_record(hits[0], explain="question")
    assert set(record["explain"]) == {"dense", "keyword", "cosine", "keyword_share", "late", "query_kind"}
    assert record["explain"]["query_kind"] == "question" and "explain" not in hit_record(hits[0])


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_paging_with_offset_is_stable(searcher, mode):
    for floor in (0, None):  # every passage, and the matches only
        whole = [h.passage.passage_id for h in searcher.search(Query("war and peace talks", k=12, mode=mode,
                                                                     min_relevance=floor))]
        pages = [h.passage.passage_id for offset in range(0, 12, 2)
                 for h in searcher.search(Query("war and peace talks", k=2, offset=offset, mode=mode,
                                                min_relevance=floor))]
        assert pages == whole and len(whole) >= (12 if floor == 0 else 1)
    assert searcher.search(Query("war and peace talks", k=3, offset=3, mode=mode, min_relevance=0))[0].rank == 4


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_group_by_document_returns_one_passage_per_article(sections_searcher, mode):
    hits = sections_searcher.search(Query("Russia and the war", k=10, mode=mode, group="document"))
    doc_ids = [h.passage.doc_id for h in hits]
    assert len(doc_ids) == len(set(doc_ids)) and len(doc_ids) >= 3


def test_filters_by_doc_id_and_source(sections_searcher):
    only = sections_searcher.search(Query("casualties", k=10, doc_ids=("part2",), min_relevance=0))
    assert only and {h.passage.doc_id for h in only} == {"part2"}
    by_source = sections_searcher.search(Query("Putin", k=10, sources=("https://example.org/1",)))
    assert by_source and {h.passage.source for h in by_source} == {"https://example.org/1"}
    assert sections_searcher.search(Query("Putin", k=10, doc_ids=("no-such-doc",))) == []


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_highlight_is_the_answering_sentence_in_every_mode(searcher, mode):
    hits = searcher.search(Query("how many casualties", k=12, mode=mode))
    hit = next(h for h in hits if "over a million casualties" in h.passage.text)
    assert hit.highlight.text.startswith("Despite over a million casualties")


def test_an_index_whose_passages_have_no_keywords_still_builds_and_answers(tmp_path, embedder):
    from indexer.index.build import build_from_documents
    from indexer.text.documents import Document

    build_from_documents([Document("a", "", "a.txt", "x"), Document("b", "", "b.txt", "!!")], tmp_path, embedder)
    found = searcher_of(tmp_path, embedder)
    assert {hit.passage.doc_id for hit in found.search(Query("x", min_relevance=0))} == {"a", "b"}
    assert found.search(Query("x", mode="keyword", min_relevance=0)) == []  # keyword mode ranks shared terms only


# A long report posted as one paragraph (written for this test): far past the model's window, so
# the chunker cuts it into many pieces, and only some pieces hold a given word.
SURVEY_SITES = ("the mill weir", "the lock keeper's cottage", "the brewery wharf", "the gasworks bridge",
                "the tannery steps", "the rope walk", "the old ferry slip", "the timber yard")
LONG_REPORT = ("The river authority began a survey of every culvert beneath the northern canal towpath "
               "this spring. " + " ".join(
                   f"In week {week}, inspectors walked the stretch past {SURVEY_SITES[week % 8]} and logged "
                   f"{week + 3} cracked headwalls, {week % 5 + 1} collapsed outfalls and silt up to "
                   f"{20 + week} centimetres deep, which they measured with rods and photographed for the "
                   f"council's engineers." for week in range(1, 29))
               + " Near the end of the survey an unexploded zeppelin-era shell was found in the silt and "
                 "removed by army specialists without injury.")
# Short notes that share a common word, or two of the report's opening words, as a news archive's
# do: enough of them that an average passage is short, as in a real archive (BM25 weighs a
# passage's length against the average).
OPENING_WORDS = ("river", "authority", "survey", "culvert", "northern", "canal", "towpath", "spring")
PLACES = ("parish meeting", "council session", "school assembly", "market square", "harbour office",
          "library talk", "rotary dinner", "village fete", "chamber of trade", "rowing club",
          "bus depot", "fire station", "cricket pavilion", "museum board", "allotment society")
SHORT_NOTES = [(f"note-{i}", f"Notice {i}", text) for i, text in enumerate([
    "The harbour wall needs repair after the storm.", "Repair work closes the high street on Sunday.",
    "The church roof repair appeal reached its target.", "Volunteers repair bicycles at the library.",
    "A repair cafe opens in the market hall.", "Road repair crews start at dawn."] + [
    f"Residents raised the {a} and the {b} at the {place}."
    for n, a in enumerate(OPENING_WORDS) for b in OPENING_WORDS[n + 1:] for place in PLACES])]


def long_report_index(tmp_path, embedder):
    """The short notes, then the long report ingested over the API (a new segment)."""
    from indexer.index.build import build_from_documents, update_documents
    from indexer.text.documents import Document

    build_from_documents([Document(i, t, f"{i}.txt", x) for i, t, x in SHORT_NOTES], tmp_path, embedder)
    update_documents(tmp_path, embedder, [Document("culverts", "Culvert Survey", "api:culverts", LONG_REPORT)], [])
    return searcher_of(tmp_path, embedder)


def test_the_piece_holding_a_querys_words_ranks_above_its_siblings(tmp_path):
    from indexer.model.hashing_encoder import HashingEncoder

    searcher = long_report_index(tmp_path, HashingEncoder())  # keyword lists only
    hits = searcher.search(Query("zeppelin shell", k=10, mode="keyword"))
    pieces = [h for h in hits if h.passage.doc_id == "culverts"]
    assert len({h.passage.passage_id for h in searcher.search(Query("survey inspectors", k=50, mode="keyword"))
                if h.passage.doc_id == "culverts"}) > 3  # the report was cut into many pieces
    assert hits[0].passage.doc_id == "culverts" and "zeppelin" in hits[0].passage.text
    assert "zeppelin" in hits[0].highlight.text
    # A sibling scores for the word only as the holder's neighbour, below it; the others not at all.
    lacking = [h for h in pieces if "zeppelin" not in h.passage.text]
    assert len(lacking) <= 2 and all(h.score < hits[0].score for h in lacking)


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_a_long_one_paragraph_article_is_found_first_by_its_own_words_right_after_ingest(tmp_path, embedder, mode):
    from indexer.model.hashing_encoder import HashingEncoder

    searcher = long_report_index(tmp_path, embedder if mode == "hybrid" else HashingEncoder())  # keywords only
    first_words = " ".join(LONG_REPORT.split()[:12])
    top = searcher.search(Query(first_words, k=3, mode=mode))[0]
    assert top.passage.doc_id == "culverts" and top.passage.start == 0, (top.passage.doc_id, top.passage.text[:80])


def test_contractions_are_the_words_they_stand_for_in_passages_and_queries(tmp_path):
    from indexer.index.build import build_from_documents
    from indexer.text.documents import Document
    from indexer.model.hashing_encoder import HashingEncoder
    from indexer.text.keyword import Analyzer

    analyzer = Analyzer()
    assert analyzer.query_terms("why won't Russia stop") == analyzer.query_terms("why will Russia not stop")
    assert "won" not in analyzer.terms("Moscow won’t back down") and "won" in analyzer.terms("They won the cup")
    assert analyzer.terms("the army's plans, they're tired, we'll see") == analyzer.terms("the army plans, they tired, "
                                                                                          "we see")
    assert [term for _, term in analyzer.matches("They won, but won't stop.", {"won", "stop"})] == ["won", "stop"]
    model = HashingEncoder()  # keyword lists only
    build_from_documents([Document("tennis", "Cup final", "t.txt", "The U.S. had won all previous 15 meetings."),
                          Document("war", "War", "w.txt", "Moscow won't stop the offensive before the winter.")],
                         tmp_path, model)
    found = searcher_of(tmp_path, model)
    hits = found.search(Query("why won't Moscow stop", mode="keyword", min_relevance=0))
    assert [h.passage.doc_id for h in hits] == ["war"]  # the tennis report shares no word with it now


def test_hybrid_results_are_ordered_by_the_relevance_they_show(searcher):
    """One score: relevance never rises down a hybrid ranking (dense and keyword keep their lists'
    order and show the same relevance)."""
    from indexer.eval.questions import read_questions
    from tests.conftest import QUESTIONS

    for question in read_questions(QUESTIONS / "questions.jsonl"):
        hits = searcher.search(Query(question.text, k=20, min_relevance=0))
        assert [h.score for h in hits] == [h.relevance for h in hits]
        assert all(a.relevance >= b.relevance for a, b in zip(hits, hits[1:])), question.text


@pytest.mark.parametrize("asked, field", [({"text": " "}, "q"), ({"k": 0}, "k"), ({"mode": "fuzzy"}, "mode"),
                                          ({"group": "story"}, "group"), ({"facets": ("colour",)}, "facets"),
                                          ({"min_relevance": 1.5}, "min_relevance"),
                                          ({"published_before": "yesterday"}, "published_before"),
                                          ({"recency_half_life_days": 0}, "recency_half_life_days")])
def test_a_query_is_checked_in_one_place_that_names_the_field_at_fault(asked, field):
    with pytest.raises(QueryError) as refused:
        Query(**{"text": "flood", **asked}).check(50)
    assert refused.value.field == field
    assert Query("flood", k=200).check() is None  # deeper pages are the edges' limit (the evaluation reads 200)
