"""The splitter on the real seed article and on small real files of every supported type."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from indexer.text.chunking import chunk_document, sentence_spans, split_long
from indexer.text.documents import parse_text, read_folder
from tests.conftest import SEED_FILE, word_spans


@pytest.fixture(scope="module")
def seed_document():
    return parse_text(SEED_FILE.read_text(encoding="utf-8"), "seed", str(SEED_FILE))


@pytest.fixture(scope="module")
def seed_passages(seed_document, embedder):
    return chunk_document(seed_document, embedder.token_spans, embedder.max_tokens)


def test_first_line_is_the_title_and_every_passage_carries_it(seed_document, seed_passages):
    assert seed_document.title.startswith("Despite U.S. pressure and mounting losses")
    assert all(p.title == seed_document.title for p in seed_passages)
    assert not any(p.text == seed_document.title for p in seed_passages)


def test_headings_become_sections_and_never_passages(seed_passages):
    sections = [p.section for p in seed_passages]
    assert sections[0] == ""  # the lead, before any heading
    assert "Why Russia Won’t Stop" in sections
    assert "The Costs and Risks Ahead" in sections
    assert "An Endgame Still Out of Reach" in sections
    headings = {"Why Russia Won’t Stop", "The Costs and Risks Ahead", "An Endgame Still Out of Reach"}
    assert not any(p.text in headings for p in seed_passages)
    reasons = next(p for p in seed_passages if "unwilling to end the war" in p.text)
    assert reasons.section == "Why Russia Won’t Stop"


def test_boilerplate_lines_are_dropped(seed_passages):
    for passage in seed_passages:
        assert "Others are reading now" not in passage.text
        assert "Also read" not in passage.text


QUESTION_ARTICLES = Path(__file__).parent / "questions" / "articles"


@pytest.fixture(scope="module")
def article_passages(embedder):
    """The question set's articles (tests/questions/articles): text, Markdown and HTML pages."""
    return {d.doc_id: chunk_document(d, embedder.token_spans, embedder.max_tokens)
            for d in read_folder(QUESTION_ARTICLES)}


def test_sentence_case_headings_become_sections_and_page_furniture_does_not(article_passages):
    bridge = article_passages["old-quay-bridge-closure"]
    assert [p.section for p in bridge if "voted 19 to 6" in p.text] == [""]  # not the dateline above it
    assert {p.section for p in bridge} == {"", "Why the bridge has to close", "What changes for commuters",
                                           "Traders fear empty streets"}  # not "Advertisement"
    battery = article_passages["battery-recycling-breakthrough"]
    assert {p.section for p in battery} == {"", "How the process works", "From the lab to a factory",
                                            "Hurdles remain"}
    furniture = ("Advertisement", "Read more", "Published 14 October", "Others are reading", "Also read",
                 "Sign up for our", "All rights reserved", "Home Farming")
    for passages in article_passages.values():
        for passage in passages:
            assert not any(line in passage.text for line in furniture), passage.text


INTERVIEW = """Lighthouse keeper on forty winters at the point
Marta Keel has kept the Skerry Point light since 1985. We asked her about the job.
Do you ever get lonely out there?
Less than people think. The supply boat comes every Tuesday, and the radio is never quiet for long.
What was the worst storm?
January 1998. The waves broke over the lamp room, and we lost power for two days.
We kept the backup lamp going by hand, turning it every four hours.
"""


@pytest.mark.parametrize("between", ["\n", "\n\n"])
def test_an_interviewers_questions_head_their_answers(between):
    """A Q&A's question lines are the section of the answer below them (found by the question's
    words), never passages of their own, with lines or blank lines between paragraphs."""
    text = between.join(INTERVIEW.strip().split("\n"))
    document = parse_text(text, "keeper", "keeper.txt")
    passages = chunk_document(document, word_spans, 200)
    by_section: dict[str, list[str]] = {}
    for p in passages:
        by_section.setdefault(p.section, []).append(p.text[:13])
    assert by_section["Do you ever get lonely out there?"] == ["Less than peo"]
    assert by_section["What was the worst storm?"] == ["January 1998.", "We kept the b"]  # an answer of two paragraphs
    assert not any(p.text.endswith("?") for p in passages)
    assert passages[0].section == "" and passages[0].text.startswith("Marta Keel")


def test_a_lone_question_in_an_article_is_a_sentence_not_a_heading():
    text = ("Harbour fees rise again\nThe harbour board raised mooring fees by 9 per cent on Monday.\n"
            "Who pays in the end?\nMostly the small fishing boats, which pay by the metre.\n")
    passages = chunk_document(parse_text(text, "fees", "fees.txt"), word_spans, 200)
    assert {p.section for p in passages} == {""} and any(p.text == "Who pays in the end?" for p in passages)


def test_paragraph_broken_across_lines_is_joined(seed_passages):
    joined = [p for p in seed_passages if "defense production," in p.text]
    assert len(joined) == 1
    assert "Chinese support, and high oil revenues" in joined[0].text
    assert joined[0].text.startswith("Despite over a million casualties")


def test_offsets_give_the_passage_back(seed_document, seed_passages):
    assert len(seed_passages) == 12
    for passage in seed_passages:
        assert seed_document.text[passage.start:passage.end] == passage.text
    assert [p.paragraph for p in seed_passages] == sorted(p.paragraph for p in seed_passages)
    assert len({p.passage_id for p in seed_passages}) == len(seed_passages)


def test_sentences_do_not_split_at_abbreviations():
    text = "Even after U.S. President Trump spoke, Dr. Smith left. Then it rained!"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "Even after U.S. President Trump spoke, Dr. Smith left.", "Then it rained!"]


def test_long_paragraph_is_split_at_sentences_within_the_model_window(embedder):
    sentence = "The committee reviewed the regional budget figures again in considerable detail. "
    body = sentence * 60
    document = parse_text("Budget Talks Continue\n" + body, "long", "long.txt")
    passages = chunk_document(document, embedder.token_spans, embedder.max_tokens)
    assert len(passages) > 1
    for passage in passages:
        assert document.text[passage.start:passage.end] == passage.text
        assert passage.text.endswith(".")  # cut at a sentence boundary
        tokens = embedder.count_tokens(passage.title + "\n" + passage.text)
        assert tokens <= embedder.max_tokens - 2
    assert len({p.paragraph for p in passages}) == 1


def test_a_sentence_longer_than_the_window_is_cut_at_words():
    words = "word " * 50
    pieces = split_long(words, 0, len(words) - 1, budget=10, token_spans=word_spans)
    assert len(pieces) == 5
    assert all(len(words[s:e].split()) <= 10 for s, e in pieces)


def test_reads_markdown_html_and_jsonl_and_skips_unknown_types(tmp_path, caplog):
    (tmp_path / "story.md").write_text("# Harbour Reopens\n\nThe harbour reopened on Monday after\n"
                                       "repairs that took a year.\n\n## Trade\n\nShips returned at once.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Rail Strike Ends</title><script>var x=1;</script></head><body>"
        "<h1>Rail Strike Ends</h1><p>Trains ran again &amp; on time.</p><h2>What Next</h2>"
        "<p>Talks resume in spring.</p></body></html>")
    (tmp_path / "feed.jsonl").write_text(
        json.dumps({"id": "a1", "title": "Dam Opens", "url": "https://example.org/dam",
                    "text": "The dam opened today."}) + "\n{not json\n")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    with caplog.at_level(logging.WARNING):
        documents = {d.doc_id: d for d in read_folder(tmp_path)}
    assert set(documents) == {"story", "page", "a1"}
    assert "photo.png" in caplog.text and "feed.jsonl line 2" in caplog.text

    story = chunk_document(documents["story"], word_spans, 256)
    assert [(p.section, p.text) for p in story] == [
        ("", "The harbour reopened on Monday after\nrepairs that took a year."),
        ("Trade", "Ships returned at once.")]
    page = chunk_document(documents["page"], word_spans, 256)
    assert documents["page"].title == "Rail Strike Ends"
    assert [(p.section, p.text) for p in page] == [("", "Trains ran again & on time."),
                                                  ("What Next", "Talks resume in spring.")]
    assert documents["a1"].source == "https://example.org/dam"
    # A file's source is its path from the indexed folder's name, never where the disk keeps it.
    assert documents["story"].source == f"{tmp_path.name}/story.md" and str(tmp_path) not in documents["page"].source


def test_hidden_folders_are_passed_over_and_a_folder_removed_while_it_is_walked_is_no_error(tmp_path, caplog):
    import shutil
    import threading

    from indexer.text.documents import holds_articles

    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "dam.txt").write_text("Dam Opens\n\nThe dam opened today.\n")
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git" / "notes.txt").write_text("Not an article\n\nA file under a hidden folder.\n")
    with caplog.at_level(logging.WARNING):
        assert [d.doc_id for d in read_folder(tmp_path)] == ["news/dam"]
    assert ".git" not in caplog.text  # not even "skipping ... unsupported file type"

    # An index folder is walked (is it a folder of articles?) while its writers create and remove
    # unfinished folders: a folder that vanishes between being listed and being read is passed over.
    done = threading.Event()

    def write_and_remove():
        while not done.is_set():
            unfinished = tmp_path / "news" / f".building-{threading.get_ident()}"
            (unfinished / "seg" / "rows").mkdir(parents=True)
            (unfinished / "seg" / "rows" / "vectors.npy").write_bytes(b"0")
            shutil.rmtree(unfinished)

    writer = threading.Thread(target=write_and_remove)
    writer.start()
    try:
        assert all(holds_articles(tmp_path) for _ in range(2000))
    finally:
        done.set()
        writer.join()


@pytest.mark.parametrize("text", ["Dam opens on Monday", "Dam Opens\n\nShort note", "breaking: dam opens"])
def test_a_note_too_short_to_look_like_an_article_is_kept_whole(text):
    document = parse_text(text, "note", "note.txt")
    passages = chunk_document(document, word_spans, 256)
    assert [(p.text, p.start, p.end) for p in passages] == [(text, 0, len(text))]


def test_a_blank_document_has_no_passages():
    assert chunk_document(parse_text("  \n\n ", "blank", "blank.txt"), word_spans, 256) == []


def test_a_file_that_is_not_utf8_is_read_not_skipped(tmp_path, caplog):
    (tmp_path / "cafe.txt").write_bytes("Café Reopens\n\nThe café reopened on Monday – at last.\n".encode("cp1252"))
    (tmp_path / "bom.txt").write_bytes("\ufeffHarbour Reopens\n\nShips returned at once.\n".encode("utf-8"))
    with caplog.at_level(logging.WARNING):
        documents = {d.doc_id: d for d in read_folder(tmp_path)}
    assert documents["cafe"].title == "Café Reopens" and "reopened on Monday – at last." in documents["cafe"].text
    assert "cafe.txt is not UTF-8" in caplog.text
    assert documents["bom"].title == "Harbour Reopens" and documents["bom"].text.startswith("Harbour")


@pytest.mark.parametrize("line, dateline", [
    ("November 19, 2019 / 12:21 AM / Updated 14 hours ago", True), ("Tue 19 Nov 2019 08.30 GMT", True),
    ("Wednesday, 4 June 2025 09:15", True), ("Sept. 3, 2024", True), ("Updated 3 hours ago", True),
    ("Since March 3", False), ("The May 4 vote", False), ("Monday", False), ("Marathon 10 tips", False),
    ("Junior 12 Sunday", False), ("What happened on March 3", False)])
def test_a_dateline_is_told_from_a_heading_with_a_date_in_it(line, dateline):
    from indexer.text.chunking import is_dateline

    assert is_dateline(line) is dateline
