"""News metadata (dates, authors, outlet, language, tags): read from every format, kept with the
article, returned with every result, over the command line and the HTTP API."""

from __future__ import annotations

import json
import re

import httpx


from tests.conftest import ARCHIVE, STAND_IN, STORIES, archive_index, searched, semsearch, served

HTML = """<!doctype html><html lang="en-GB"><head><title>Drone output doubles | Harbour Times</title>
<meta property="og:site_name" content="Harbour Times">
<meta property="article:published_time" content="2026-03-05T14:30:00+02:00">
<meta property="article:modified_time" content="2026-03-06T08:00:00Z">
<meta property="article:author" content="Jane Roe"><meta property="article:author" content="John Doe">
<meta property="article:section" content="World">
<meta property="article:tag" content="drones"><meta property="article:tag" content="industry">
</head><body><h1>Drone output doubles</h1>
<p>Factories in the region now assemble twice as many drones as last spring, officials said.</p>
</body></html>"""

JSON_LD = """<html><head><title>Grain deal extended</title>
<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [{"@type": "WebSite"},
 {"@type": "NewsArticle", "datePublished": "2026-02-01T09:00:00-05:00", "inLanguage": "en",
  "author": [{"@type": "Person", "name": "Ana Lima"}], "publisher": {"@type": "Organization", "name": "Wire Daily"},
  "keywords": "grain, shipping", "articleSection": "Economy"}]}</script></head>
<body><h1>Grain deal extended</h1><p>The grain corridor deal was extended by four months on Sunday.</p></body></html>"""

MARKDOWN = """---
title: Ferry strike ends
date: 2026-01-20
authors:
  - Sam Park
outlet: "Coast Gazette"
tags: [transport, labour]
language: en
---
# Ferry strike ends

Ferry crews returned to work after a two-week strike over pay.
"""

TEXT = """Published: 2026-01-15 18:45
Outlet: Valley Post
Author: Lee Chan
Dam opens to the public
The new dam opened to visitors on Thursday and will power the valley.
"""

JSONL = (json.dumps({"id": "quake", "title": "Quake shakes coast", "text": "A strong quake shook the coast at dawn.",
                     "published_at": "2026-04-02T03:10:00Z", "authors": ["Roe, Jane"], "outlet": "Wire Daily",
                     "language": "en", "tags": ["science"]}) + "\n"
         + json.dumps({"id": "fair", "title": "Book fair opens", "text": "The book fair opened with record crowds.",
                       "published_at": "the day before yesterday"}) + "\n")


def news_folder(tmp_path):
    seeds = tmp_path / "news"
    seeds.mkdir()
    for name, content in (("drones.html", HTML), ("grain.html", JSON_LD), ("ferry.md", MARKDOWN), ("dam.txt", TEXT),
                          ("wire.jsonl", JSONL)):
        (seeds / name).write_text(content, encoding="utf-8")
    return seeds


def test_metadata_from_every_format_comes_back_with_every_result(tmp_path):
    seeds, index = news_folder(tmp_path), tmp_path / "index"
    built = semsearch("index", str(seeds), "--out", str(index), env=STAND_IN)
    assert built.returncode == 0, built.stderr
    # A date that cannot be read is a warning naming the file and the value; the article is kept.
    assert "wire.jsonl" in built.stderr and "'the day before yesterday'" in built.stderr
    assert "indexed 6 documents" in built.stdout

    found = searched("drones grain ferry dam quake fair", index)
    assert set(found) == {"drones", "grain", "ferry", "dam", "quake", "fair"}
    assert {k: found["drones"][k] for k in ("published_at", "updated_at", "authors", "outlet", "language", "tags")} == {
        "published_at": "2026-03-05T12:30:00Z", "updated_at": "2026-03-06T08:00:00Z",
        "authors": ["Jane Roe", "John Doe"], "outlet": "Harbour Times", "language": "en-GB",
        "tags": ["World", "drones", "industry"]}
    assert (found["grain"]["published_at"], found["grain"]["outlet"], found["grain"]["authors"], found["grain"]["tags"]) \
        == ("2026-02-01T14:00:00Z", "Wire Daily", ["Ana Lima"], ["grain", "shipping", "Economy"])
    assert (found["ferry"]["title"], found["ferry"]["published_at"], found["ferry"]["authors"], found["ferry"]["tags"]) \
        == ("Ferry strike ends", "2026-01-20T00:00:00Z", ["Sam Park"], ["transport", "labour"])
    # Plain text: the header lines are metadata, not the title or a passage; offsets still count
    # from the file's start.
    dam = found["dam"]
    assert (dam["title"], dam["outlet"], dam["published_at"]) == ("Dam opens to the public", "Valley Post",
                                                                 "2026-01-15T18:45:00Z")
    assert "Outlet" not in dam["text"] and TEXT[dam["start"]:dam["end"]] == dam["text"]
    assert found["quake"]["authors"] == ["Roe, Jane"]  # a JSON list's items are names as given
    assert found["fair"]["published_at"] is None and found["fair"]["title"] == "Book fair opens"


def test_a_metadata_change_alone_updates_the_article(tmp_path):
    seeds, index = news_folder(tmp_path), tmp_path / "index"
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0
    (seeds / "dam.txt").write_text(TEXT.replace("Valley Post", "Valley Herald"), encoding="utf-8")
    rebuilt = semsearch("index", str(seeds), "--out", str(index), env=STAND_IN)
    assert "changed 1" in rebuilt.stdout
    assert searched("dam visitors valley", index)["dam"]["outlet"] == "Valley Herald"


def test_the_seed_article_without_metadata_gives_empty_fields(tmp_path):
    from tests.conftest import SEED_FILE

    seeds, index = tmp_path / "seeds", tmp_path / "index"
    seeds.mkdir()
    (seeds / SEED_FILE.name).write_text(SEED_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0
    first = next(iter(searched("Russia war", index).values()))
    assert first["title"].startswith("Despite U.S. pressure")
    assert (first["published_at"], first["authors"], first["outlet"], first["tags"]) == (None, [], None, [])


def test_documents_posted_with_metadata_return_it_and_a_bad_date_is_a_warning(folder_index):
    _, index = folder_index
    headers = {"Authorization": "Bearer k"}
    with served(index, {**STAND_IN, "SEMSEARCH_API_KEY": "k"}) as (_, url):
        answer = httpx.post(f"{url}/documents", headers=headers, json={"documents": [
            {"id": "bridge", "title": "Bridge reopens", "text": "The old bridge reopened to traffic after repairs.",
             "published_at": "2026-05-01T10:00:00+01:00", "authors": ["Kim Lee"], "outlet": "City News",
             "language": "en", "tags": ["transport"]},
            {"id": "market", "title": "Market moves", "text": "The night market moved to the harbour square.",
             "updated_at": "31/02/2026", "published_at": "0001-01-01T00:00:00+14:00"}]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == ["bridge", "market"]
        assert answer.json()["warnings"] == [  # each says why: a valid date can still fall outside UTC's years
            "document market: published_at '0001-01-01T00:00:00+14:00' is a valid date-time, but out of range: in "
            "UTC it falls before the year 1 or after 9999; stored without it",
            "document market: updated_at '31/02/2026' is not an ISO 8601 (or RFC 2822) date or date-time; "
            "stored without it"]
        hits = {r["doc_id"]: r for r in httpx.get(f"{url}/search", params={"q": "bridge market harbour traffic"},
                                                  timeout=30).json()["results"]}
        assert (hits["bridge"]["published_at"], hits["bridge"]["authors"], hits["bridge"]["outlet"],
                hits["bridge"]["tags"]) == ("2026-05-01T09:00:00Z", ["Kim Lee"], "City News", ["transport"])
        assert hits["market"]["updated_at"] is None
        wrong = httpx.post(f"{url}/documents", headers=headers, timeout=30, json={"documents": [
            {"id": "x", "text": "Some text.", "authors": "Kim Lee"}]})
        assert wrong.status_code == 422  # a list, as the spec says


def matching(index, *flags: str) -> list[str]:
    printed = semsearch("search", "harbour port workers", "--index", str(index), "--json", "-k", "50",
                        "--mode", "dense", *flags, env=STAND_IN)
    assert printed.returncode == 0, printed.stderr
    return [r["doc_id"] for r in json.loads(printed.stdout)["results"]]


def test_filters_match_a_brute_force_count_across_time_zones_and_date_only_bounds(tmp_path):
    from datetime import datetime, timezone

    index = archive_index(tmp_path)
    utc = {i: datetime.fromisoformat(at if "T" in at else at + "T00:00:00+00:00").astimezone(timezone.utc)
           for i, at, *_ in ARCHIVE if at}

    def expected(after=None, before=None, outlet=None, author=None, language=None, tag=None) -> set[str]:
        keep = set()
        for i, _, o, authors, lang, tags in ARCHIVE:
            if (after or before) and i not in utc:
                continue
            if after and utc[i] < after or before and utc[i] >= before:
                continue
            if outlet and o.lower() != outlet.lower() or author and author.lower() not in [a.lower() for a in authors]:
                continue
            if language and lang.lower().split("-")[0] != language and lang.lower() != language:
                continue
            if tag and tag.lower() not in [t.lower() for t in tags]:
                continue
            keep.add(i)
        return keep

    day = lambda d, h=0: datetime(2026, 3, d, h, tzinfo=timezone.utc)  # noqa: E731
    cases = [
        (("--after", "2026-03-06"), expected(after=day(6))),  # a1 is the 6th in UTC, the 5th where written
        (("--before", "2026-03-05"), expected(before=day(6))),  # a date alone takes in the whole 5th
        (("--before", "2026-03-05T10:00:00Z"), expected(before=day(5, 10))),  # a date-time is exclusive
        (("--after", "2026-03-04", "--before", "2026-03-04"), expected(after=day(4), before=day(5))),
        (("--outlet", "COAST GAZETTE"), expected(outlet="coast gazette")),
        (("--author", "jane roe"), expected(author="jane roe")),
        (("--language", "en"), expected(language="en")),
        (("--tag", "port", "--outlet", "Harbour Times"), expected(tag="port", outlet="harbour times")),
        (("--tag", "port", "--tag", "labour"), expected(tag="port") | expected(tag="labour")),  # alternatives
        (("--after", "2026-03-01", "--author", "Jane Roe"), expected(after=day(1), author="jane roe")),
    ]
    for flags, wanted in cases:
        assert set(matching(index, *flags)) == wanted, flags
    assert "a5" in matching(index) and "a5" not in matching(index, "--after", "2000-01-01")  # undated

    wrong = semsearch("search", "harbour", "--index", str(index), "--after", "last week", env=STAND_IN)
    assert wrong.returncode == 2 and "--after must be an ISO 8601 date or date-time" in wrong.stderr


def test_newest_first_and_the_recency_boost(tmp_path):
    index = archive_index(tmp_path)
    newest = matching(index, "--sort", "newest")
    assert newest == ["a1", "a6", "a2", "a3", "a4", "a5"]  # a1 is 04:30 on the 6th in UTC; undated last
    # Same text, so the same relevance: the boost alone orders them, newest first.
    boosted = matching(index, "--recency-half-life", "1")
    assert boosted.index("a1") < boosted.index("a6") < boosted.index("a2") < boosted.index("a3") < boosted.index("a4")


def test_filters_sort_and_boost_over_http(tmp_path):
    index = archive_index(tmp_path)
    with served(index, STAND_IN) as (_, url):
        get = lambda **params: httpx.get(f"{url}/search", params={"q": "harbour port", "k": 50, **params},  # noqa: E731
                                         timeout=30)
        found = get(published_after="2026-03-05", outlet=["wire daily", "Harbour Times"])
        assert found.status_code == 200 and {r["doc_id"] for r in found.json()["results"]} == {"a1", "a2"}
        posted = httpx.post(f"{url}/search", timeout=30, json={"q": "harbour port", "k": 50, "tag": ["labour"],
                                                              "sort": "newest", "recency_half_life_days": 30})
        assert [r["doc_id"] for r in posted.json()["results"]] == ["a2", "a3"]
        bad = get(published_before="5 March")
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "published_before"
        assert get(recency_half_life_days=0).status_code == 422
        assert get(sort="oldest").status_code == 422


def brute_force_facets(hits: list[dict]) -> dict[str, dict[str, int]]:
    """Documents per value over the hits (every match, when the page holds them all), counted by hand."""
    seen: dict[str, dict[str, set]] = {name: {} for name in ("outlet", "month", "section", "author", "tag", "language")}
    for h in hits:
        for name, values in (("outlet", [h["outlet"]]), ("month", [(h["published_at"] or "")[:7]]),
                             ("section", [h["section"]]), ("author", h["authors"]), ("tag", h["tags"]),
                             ("language", [h["language"]])):
            for value in values:
                if value:
                    seen[name].setdefault(value, set()).add(h["doc_id"])
    return {name: {value: len(docs) for value, docs in values.items()} for name, values in seen.items()}


def test_facet_counts_match_a_brute_force_count_over_all_matches(tmp_path):
    index = archive_index(tmp_path)
    query = "workers news about cranes and wages"  # every item matches some of it, one all of it
    everything = "outlet,month,section,author,tag,language"
    # The stand-in's relevance is not calibrated, so its floor is 0 unless asked: every hit is a
    # match, then only those at or above a floor between the hits' relevances (the grade counts).
    relevances = sorted(r["relevance"] for r in json.loads(semsearch(
        "search", query, "--index", str(index), "--json", "-k", "50", env=STAND_IN).stdout)["results"])
    floor = str(relevances[len(relevances) // 2])
    for mode, flags in (("dense", ()), ("hybrid", ()), ("keyword", ()), ("dense", ("--outlet", "wire daily")),
                        ("hybrid", ("--min-relevance", floor))):
        printed = semsearch("search", query, "--index", str(index), "--json", "-k", "50",
                            "--mode", mode, "--facets", everything, *flags, env=STAND_IN)
        assert printed.returncode == 0, printed.stderr
        answer = json.loads(printed.stdout)
        facets = {name: {c["value"]: c["count"] for c in counts} for name, counts in answer["facets"].items()}
        assert facets == brute_force_facets(answer["results"]), (mode, flags)
        if "--min-relevance" in flags:
            assert 0 < len(answer["results"]) < len(relevances)
            assert all(r["relevance"] >= float(floor) for r in answer["results"])
        for counts in answer["facets"].values():  # most frequent first
            assert [c["count"] for c in counts] == sorted((c["count"] for c in counts), reverse=True)
    # Over every match, not only the page: one result shown, the counts still cover the rest.
    one = json.loads(semsearch("search", query, "--index", str(index), "--json", "-k", "1",
                               "--mode", "dense", "--facets", "outlet", env=STAND_IN).stdout)
    assert len(one["results"]) == 1 and sum(c["count"] for c in one["facets"]["outlet"]) > 1
    with served(index, STAND_IN) as (_, url):
        answer = httpx.get(f"{url}/search", params={"q": "harbour port", "facets": "month,outlet", "k": 2}, timeout=30)
        assert answer.status_code == 200 and set(answer.json()["facets"]) == {"month", "outlet"}
        assert "facets" not in httpx.get(f"{url}/search", params={"q": "harbour port"}, timeout=30).json()
        assert httpx.get(f"{url}/search", params={"q": "harbour", "facets": "colour"}, timeout=30).status_code == 422


def test_publication_times_in_every_common_form_are_kept_in_utc():
    from indexer.text.documents import document_from_record

    forms = {"2026-03-05T23:30:00-05:00": "2026-03-06T04:30:00Z", "2026-03-05T10:00:00.250Z": "2026-03-05T10:00:00Z",
             "2026-03-05 10:00": "2026-03-05T10:00:00Z", "2026-03-05": "2026-03-05T00:00:00Z",
             "Thu, 05 Mar 2026 10:00:00 +0100": "2026-03-05T09:00:00Z",  # RFC 2822, as feeds write it
             "0001-01-01T00:00:00+05:00": None,  # before year 1 in UTC: left out, never a crash
             "March the fifth": None, "": None}
    for written, kept in forms.items():
        document = document_from_record({"id": "a", "text": "Text.", "published_at": written}, "feed.jsonl:1")
        assert document.metadata.published_at == kept, written


def test_syndicated_copies_collapse_into_one_story_that_names_the_others(tmp_path):
    seeds = tmp_path / "syndicated"
    seeds.mkdir()
    (seeds / "feed.jsonl").write_text("".join(json.dumps({"id": i, "title": "Grain deal", "text": text, "outlet": o})
                                              + "\n" for i, o, text in STORIES), encoding="utf-8")
    index = tmp_path / "index"
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0
    plain = searched("grain corridor deal extended", index)
    assert {"wire-grain", "harbour-grain", "coast-grain", "valley-grain"} <= set(plain)
    assert all("also_in" not in r for r in plain.values())  # only asked for with collapse

    printed = semsearch("search", "grain corridor deal extended", "--index", str(index), "--json", "-k", "10",
                        "--collapse", "story", env=STAND_IN)
    assert printed.returncode == 0, printed.stderr
    shown = json.loads(printed.stdout)["results"]
    copies = {"wire-grain", "harbour-grain", "coast-grain"}
    leaders = [r for r in shown if r["doc_id"] in copies]
    assert len(leaders) == 1  # the three copies: one result
    others = {(c["doc_id"], c["outlet"]) for c in leaders[0]["also_in"]}
    assert others == {(i, o) for i, o, _ in STORIES if i in copies - {leaders[0]["doc_id"]}}
    assert any(r["doc_id"] == "valley-grain" and r["also_in"] == [] for r in shown)  # same subject, other story
    in_words = semsearch("search", "grain corridor deal extended", "--index", str(index), "-k", "10",
                         "--collapse", "story", env=STAND_IN).stdout  # the terminal names them too
    lead = next(i for i, o, _ in STORIES if i == leaders[0]["doc_id"])
    outlets = sorted(o for i, o, _ in STORIES if i in copies - {lead})
    assert re.search(r"also in 2 outlets: (.+)\n", in_words) and sorted(
        re.search(r"also in 2 outlets: (.+)\n", in_words).group(1).split(", ")) == outlets
