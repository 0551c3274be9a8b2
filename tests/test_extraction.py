"""The article of a web page, as a reader sees it: measured on news pages of varied layouts
(tests/extraction: written for this project, each with its article), with the article's
metadata, and never a lost page."""

from __future__ import annotations

import json
import logging

import pytest

from bench.extraction import ARTICLES, PAGES, score
from indexer.text.documents import parse_html, read_folder
from tests.conftest import STAND_IN, semsearch


def test_what_the_index_keeps_of_a_news_page_is_the_article():
    report = score(PAGES, ARTICLES)
    layouts = {page.stem.split("--")[1] for page in PAGES.glob("*.html")}
    assert report["pages"] >= 25 and len(layouts) >= 8
    after, before = report["readers"]["after"], report["readers"]["before"]
    assert after["precision"] >= 0.93 and after["recall"] >= 0.95, after  # measured 0.948 / 0.994
    assert before["precision"] < 0.85  # all visible text: menus, related links, comments, prompts


def test_headings_become_sections_and_furniture_stays_out():
    page = PAGES / "library-late-hours--with-comments.html"
    document = parse_html(page.read_text(encoding="utf-8"), "library", "pages/library.html")
    assert document.title == "City libraries to stay open until 10 p.m. on weekdays"
    assert "# What happens next" in document.text.splitlines()
    for furniture in ("About time too", "Comments are moderated", "Privacy policy", "Tags:"):
        assert furniture not in document.text


def test_metadata_from_the_page_first_then_what_the_extractor_finds():
    tagged = parse_html((PAGES / "heat-pump-grants--classic.html").read_text(encoding="utf-8"), "h", "h.html")
    assert tagged.metadata.published_at == "2026-11-20T08:30:00Z" and tagged.metadata.authors == ("Aisha Rahman",)
    assert tagged.metadata.outlet == "The Daily Ledger"
    # No meta tags at all: the date is written only in the text ("Posted on November 19, 2019").
    untagged = parse_html((PAGES / "school-meals--date-in-text.html").read_text(encoding="utf-8"), "s", "s.html")
    assert untagged.metadata.published_at == "2019-11-19T00:00:00Z"
    assert untagged.title == "Free school meals extended to all primary pupils"  # not "... - The Daily Ledger"


def test_a_page_without_an_article_is_kept_with_a_warning_naming_it(tmp_path, caplog):
    (tmp_path / "menu.html").write_text('<html><head><title>Sections</title></head><body><div class="menu">'
                                        '<a href="/a">Home</a> <a href="/b">News</a></div></body></html>')
    (tmp_path / "broken.html").write_text("<<<>>> <p>half a tag <b>and then nothing")
    with caplog.at_level(logging.WARNING):
        documents = {d.doc_id: d for d in read_folder(tmp_path)}
    assert set(documents) == {"menu", "broken"} and "Home" in documents["menu"].text
    assert "half a tag" in documents["broken"].text  # not HTML the extractor can read: all its text kept
    assert any("broken.html" in r.getMessage() and "no article text" in r.getMessage() for r in caplog.records)
    assert not any(r.name.startswith("trafilatura") for r in caplog.records)  # its own notes stay quiet


def test_highlights_point_into_the_text_kept_from_a_page(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    page = PAGES / "flood-barrier-test--with-comments.html"
    (folder / page.name).write_bytes(page.read_bytes())
    index = tmp_path / "index"
    assert semsearch("index", str(folder), "--out", str(index), env=STAND_IN).returncode == 0
    printed = semsearch("search", "how long did the gates take to close", "--index", str(index), "--json",
                        "--mode", "keyword", env=STAND_IN)
    results = json.loads(printed.stdout)["results"]
    document = parse_html(page.read_text(encoding="utf-8"), page.stem, f"pages/{page.name}")
    assert results and all(document.text[r["start"]:r["end"]] == r["text"] for r in results)
    assert all(r["text"][r["highlight_start"] - r["start"]:r["highlight_end"] - r["start"]] == r["highlight"]
               for r in results)
    assert not any("Who is going to pay" in r["text"] for r in results)  # a reader's comment is not the article


def test_a_wire_page_keeps_no_dateline_credit_line_repeated_headline_or_more_list_as_sections():
    """A wire-service layout: the dateline ("November 19, 2019 / 12:21 AM / Updated 14 hours
    ago") and the headline again as a heading above the body, the credit line and "More:" with
    links below it. None is a section or a passage; every paragraph is in the body's own section."""
    from indexer.text.chunking import chunk_document
    from tests.conftest import word_spans

    page = PAGES / "port-strike--wire-dateline.html"
    document = parse_html(page.read_text(encoding="utf-8"), "port", "pages/port.html")
    passages = chunk_document(document, word_spans, 256)
    assert [p.text[:20] for p in passages] == ["ODESSA BAY (Meridian", "The union is demandi", "Grain prices on the ",
                                               "The labour ministry "]
    assert {p.section for p in passages} == {""}
    assert document.metadata.published_at == "2019-11-19T00:21:00Z"


@pytest.mark.parametrize("written", ["2019-11-19T01:21:00+01:00", "Tue, 19 Nov 2019 00:21:00 GMT", "November 19, 2019",
                                     "2019/11/19 00:21", "19.11.2019"])
def test_a_date_in_a_meta_tag_is_read_as_pages_write_it(written, caplog):
    page = (PAGES / "port-strike--wire-dateline.html").read_text(encoding="utf-8")
    document = parse_html(page.replace("2019-11-19T00:21:00Z", written), "port", "pages/port.html")
    assert document.metadata.published_at[:10] == "2019-11-19" and "ignored" not in caplog.text


def test_a_meta_date_that_cannot_be_read_is_named_and_ignored(caplog):
    page = (PAGES / "port-strike--wire-dateline.html").read_text(encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        parse_html(page.replace("2019-11-19T00:21:00Z", "the day before yesterday"), "port", "pages/port.html")
    assert "pages/port.html: published_at 'the day before yesterday' is not an ISO 8601" in caplog.text
    assert "that value is ignored" in caplog.text
