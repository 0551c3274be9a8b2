"""Answers on the seed article: the right passages first and the answering sentence marked."""

from __future__ import annotations

import pytest

from indexer.search import Query, QueryError, fuse, hit_record, top_rows

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
    assert [row for row, _ in fuse([dense, sparse], rrf_k=60)] == [1, 3, 2, 4]


def test_top_rows_is_stable_for_ties():
    import numpy as np

    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.0])
    assert top_rows(scores, 3) == [(1, 0.9), (0, 0.5), (2, 0.5)]
    assert top_rows(scores, 10, positive_only=True) == [(1, 0.9), (0, 0.5), (2, 0.5), (3, 0.5)]
