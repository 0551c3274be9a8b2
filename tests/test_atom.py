"""A search as an Atom feed (GET /search.atom, `search --atom`) and the OpenSearch description:
valid Atom 1.0 as RFC 4287 asks, read by feedparser without complaint, stable entries, and
conditional GETs that answer 304 until a matching article arrives."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from xml.etree import ElementTree

import feedparser
import pytest
from fastapi.testclient import TestClient

from indexer.settings import Secret, Settings
from service.app import create_app
from tests.conftest import ARCHIVE, STAND_IN, archive_index, metric_values, semsearch

A = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
KEY = "feed-key"
QUERY = {"q": "harbour port workers", "min_relevance": 0}


def valid_atom(body: bytes) -> ElementTree.Element:
    """The checks of a feed validator that matter to readers (RFC 4287): the feed and each entry
    have one id, title and updated; times are RFC 3339; ids are unique; an author for every
    entry; an entry without content has an alternate link; text is escaped (the XML parses)."""
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    feed = ElementTree.fromstring(body)
    assert feed.tag == f"{A}feed"

    def once(element, name):
        found = element.findall(f"{A}{name}")
        assert len(found) == 1, f"{element.tag} has {len(found)} {name}"
        return found[0].text or ""

    for name in ("id", "title"):
        assert once(feed, name)
    assert RFC3339.match(once(feed, "updated"))
    entries = feed.findall(f"{A}entry")
    ids = [once(entry, "id") for entry in entries]
    assert len(set(ids)) == len(ids) and all(i.startswith("urn:uuid:") for i in ids)
    feed_author = feed.find(f"{A}author/{A}name") is not None
    for entry in entries:
        once(entry, "title")
        for name in ("updated", "published"):
            assert RFC3339.match(once(entry, name))
        assert feed_author or entry.find(f"{A}author/{A}name") is not None
        links = [link for link in entry.findall(f"{A}link") if link.get("rel", "alternate") == "alternate"]
        assert links or entry.find(f"{A}content") is not None
    return feed


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The dated archive of tests/test_metadata.py (five dated articles, one undated), stand-in model."""
    return archive_index(tmp_path_factory.mktemp("feed"))


@pytest.fixture
def client(archive):
    settings = Settings(index_dir=archive, model_path="hashing", api_key=Secret(KEY), reload_interval=3600)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def entries_of(body: bytes) -> list[dict]:
    return feedparser.parse(body).entries


def test_a_search_is_a_feed_of_its_newest_matching_articles_one_entry_each(client):
    response = client.get("/search.atom", params=QUERY)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/atom+xml")
    feed = valid_atom(response.content)
    parsed = feedparser.parse(response.content)
    assert parsed.feed.title == "semsearch: harbour port workers"
    assert parsed.feed.links[0].rel == "self" and parsed.feed.links[0].href == str(response.url)
    dated = {i: datetime.fromisoformat(at if "T" in at else at + "T00:00:00+00:00").astimezone(timezone.utc)
             for i, at, *_ in ARCHIVE if at}
    newest_first = sorted(dated, key=dated.get, reverse=True)
    entries = parsed.entries
    assert [e.title for e in entries] == [f"Harbour report {i}" for i in newest_first]  # a5 has no date
    assert "1 more article without a publication time" in parsed.feed.subtitle
    assert feed.find(f"{A}updated").text == dated[newest_first[0]].strftime("%Y-%m-%dT%H:%M:%SZ")
    first = entries[0]  # a1: 2026-03-05T23:30-05:00, Harbour Times, Jane Roe, tag port
    assert first.published == "2026-03-06T04:30:00Z" and first.updated == "2026-03-06T04:30:00Z"
    assert [a.name for a in first.authors] == ["Jane Roe"] and first.tags[0].term == "port"
    assert first.source.title == "Harbour Times"
    assert first.link == "http://testserver/documents/a1"  # no URL of its own: the stored document
    assert "<strong>" in first.summary and "Harbour workers and port news, item a1." in first.summary
    by_title = {e.title: e for e in entries}
    assert by_title["Harbour report a4"].get("authors") in (None, [{}], [])  # none: the feed's author stands


def test_entries_keep_their_ids_and_a_304_holds_until_a_matching_article_arrives(client):
    first = client.get("/search.atom", params=QUERY)
    again = client.get("/search.atom", params=QUERY)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}, {"If-None-Match": f'"x", {etag}'}):
        unchanged = client.get("/search.atom", params=QUERY, headers=headers)
        assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    assert client.get("/search.atom", params=QUERY, headers={"If-None-Match": '"other"'}).status_code == 200

    built = parsedate_to_datetime(modified).timestamp()
    while time.time() < built + 1:  # Last-Modified counts whole seconds: the write must fall in a later one
        time.sleep(0.05)
    posted = client.post("/documents", headers={"Authorization": f"Bearer {KEY}"}, json={"documents": [{
        "id": "a7", "title": "Harbour workers & port <news>", "text": "Harbour workers and port news, item a7. "
        "Pilots guided the last \x0bship in.", "url": "https://news.example/harbour/a7",
        "published_at": "2026-03-07T08:00:00Z", "outlet": "Wire Daily"}]})
    assert posted.status_code == 200, posted.text
    client.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    changed = client.get("/search.atom", params=QUERY, headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert parsedate_to_datetime(changed.headers["last-modified"]) > parsedate_to_datetime(modified)
    valid_atom(changed.content)
    before, after = entries_of(first.content), entries_of(changed.content)
    assert after[0].title == "Harbour workers & port <news>" and after[0].link == "https://news.example/harbour/a7"
    assert [(e.id, e.title) for e in after[1:]] == [(e.id, e.title) for e in before]  # the same entries, the same ids
    # Escaped, never markup: the title is text; the summary's HTML holds the passage as text around <strong>
    raw = ElementTree.fromstring(changed.content).find(f"{A}entry")
    assert raw.find(f"{A}title").text == "Harbour workers & port <news>"
    assert "\x0b" not in changed.text and "<strong>" in raw.find(f"{A}summary").text
    client.delete("/documents/a7", headers={"Authorization": f"Bearer {KEY}"})


def test_a_feed_asked_for_again_is_written_once_until_the_index_changes(client):
    def engine_calls() -> float:
        return sum(value for (name, _), value in metric_values(client.get("/metrics").text).items()
                   if name == "semsearch_engine_calls_total")

    params = {**QUERY, "outlet": "Harbour Times"}
    first = client.get("/search.atom", params=params)
    before = engine_calls()
    assert client.get("/search.atom", params=params).content == first.content  # many readers, one search
    assert engine_calls() == before
    client.get("/search.atom", params={**params, "k": 3})  # another address: its own feed
    assert engine_calls() > before
    posted = client.post("/documents", headers={"Authorization": f"Bearer {KEY}"}, json={"documents": [{
        "id": "a8", "title": "Harbour report a8", "text": "Harbour workers and port news, item a8.",
        "published_at": "2026-03-08T08:00:00Z", "outlet": "Harbour Times"}]})
    assert posted.status_code == 200
    client.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert entries_of(client.get("/search.atom", params=params).content)[0].title == "Harbour report a8"
    client.delete("/documents/a8", headers={"Authorization": f"Bearer {KEY}"})


def test_a_search_nothing_answers_is_a_feed_without_entries_and_errors_are_the_apis(client):
    empty = client.get("/search.atom", params={"q": "flibbertigibbet zorkmid", "min_relevance": 0.99})
    assert empty.status_code == 200
    assert valid_atom(empty.content).findall(f"{A}entry") == []
    for params, field in (({"q": ""}, "q"), ({"q": "port", "k": 51}, "k"),
                          ({"q": "port", "published_after": "soon"}, "published_after")):
        refused = client.get("/search.atom", params=params)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == field
    assert client.get("/search.atom", params={"q": "port", "tag": [f"t{n}" for n in range(101)]}).status_code == 422


def test_filters_mode_and_the_floor_apply_to_the_feed_as_to_the_search(client):
    narrowed = entries_of(client.get("/search.atom", params={**QUERY, "outlet": "wire daily"}).content)
    assert [e.title for e in narrowed] == ["Harbour report a2", "Harbour report a3"]
    searched = client.get("/search", params={**QUERY, "outlet": "wire daily", "k": 50, "group": "article"}).json()
    assert {r["title"] for r in searched["results"]} == {e.title for e in narrowed}
    few = entries_of(client.get("/search.atom", params={**QUERY, "k": 2}).content)
    assert len(few) == 2
    for options in ({"mode": "keyword"}, {"mode": "dense"}, {"collapse": "story"}):
        other = client.get("/search.atom", params={**QUERY, **options}).content
        valid_atom(other)
        assert {e.title for e in entries_of(other)} == \
               {e.title for e in entries_of(client.get("/search.atom", params=QUERY).content)}  # all match at 0
    strict = client.get("/search", params={"q": "harbour port workers", "k": 50, "group": "article"}).json()
    floor = entries_of(client.get("/search.atom", params={"q": "harbour port workers"}).content)
    assert {e.title for e in floor} <= {r["title"] for r in strict["results"]}  # only matches above the floor


def test_opensearch_describes_the_page_the_feed_and_the_api(client):
    response = client.get("/opensearch.xml")
    assert response.headers["content-type"].startswith("application/opensearchdescription+xml")
    root = ElementTree.fromstring(response.content)
    o = "{http://a9.com/-/spec/opensearch/1.1/}"
    assert root.tag == f"{o}OpenSearchDescription" and 0 < len(root.find(f"{o}ShortName").text) <= 16
    templates = {url.get("type"): url.get("template") for url in root.findall(f"{o}Url")}
    assert templates == {"text/html": "http://testserver/?q={searchTerms}",
                         "application/atom+xml": "http://testserver/search.atom?q={searchTerms}",
                         "application/json": "http://testserver/search?q={searchTerms}"}
    filled = templates["application/atom+xml"].replace("{searchTerms}", "harbour")
    assert client.get(filled.removeprefix("http://testserver")).status_code == 200


def test_the_command_line_writes_the_feed_the_service_serves(client, archive):
    served = client.get("/search.atom", params=QUERY).content
    printed = semsearch("search", "harbour port workers", "--index", str(archive), "--atom", "--min-relevance", "0",
                        "--feed-url", "https://example.org/harbour.atom", env=STAND_IN)
    assert printed.returncode == 0, printed.stderr
    assert printed.stderr == ""
    body = printed.stdout.encode()
    mine, theirs = valid_atom(body), ElementTree.fromstring(served)
    assert mine.find(f"{A}id").text == theirs.find(f"{A}id").text  # the same search, the same feed
    assert [(e.find(f"{A}id").text, e.find(f"{A}summary").text) for e in mine.findall(f"{A}entry")] == \
           [(e.find(f"{A}id").text, e.find(f"{A}summary").text) for e in theirs.findall(f"{A}entry")]
    assert feedparser.parse(body).feed.links[0].href == "https://example.org/harbour.atom"
    # Without a URL of their own or a service to link to, entries carry their passage as content
    assert Counter(e.find(f"{A}content") is not None for e in mine.findall(f"{A}entry")) == Counter({True: 5})


def test_the_command_line_asks_a_running_server_for_its_feed(archive):
    import httpx

    from tests.conftest import start_server, stop_server

    process, url = start_server(archive, STAND_IN)
    try:
        printed = semsearch("search", "harbour port workers", "--atom", "--min-relevance", "0", "--outlet", "Wire Daily",
                            "--url", url, env=STAND_IN)
        served = httpx.get(url + "/search.atom", params={**QUERY, "outlet": "Wire Daily"}).content
    finally:
        stop_server(process)
    assert printed.returncode == 0, printed.stderr
    mine, theirs = valid_atom(printed.stdout.encode()), ElementTree.fromstring(served)
    assert [e.find(f"{A}link").get("href") for e in mine.findall(f"{A}entry")] == \
           [e.find(f"{A}link").get("href") for e in theirs.findall(f"{A}entry")] == \
           [f"{url}/documents/a2", f"{url}/documents/a3"]  # the server links articles without a URL
    assert mine.find(f"{A}link[@rel='self']").get("href").startswith(url + "/search.atom?q=harbour")


def test_an_entrys_link_reaches_a_stored_document_whose_id_has_a_slash(tmp_path):
    """Articles indexed from a folder of folders have ids like news/harbour-9: their entries link
    to GET /documents/news%2Fharbour-9, which must find them."""
    (tmp_path / "articles" / "news").mkdir(parents=True)
    (tmp_path / "articles" / "news" / "harbour-9.md").write_text(
        "---\ntitle: Harbour report 9\npublished_at: 2026-03-09T08:00:00Z\n---\n\n"
        "Harbour workers and port news, item nine.\n")
    assert semsearch("index", str(tmp_path / "articles"), "--out", str(tmp_path / "index"), env=STAND_IN).returncode == 0
    settings = Settings(index_dir=tmp_path / "index", model_path="hashing", api_key=Secret(KEY), reload_interval=3600)
    with TestClient(create_app(settings)) as client:
        entries = entries_of(client.get("/search.atom", params=QUERY).content)
        assert [e.link for e in entries] == ["http://testserver/documents/news%2Fharbour-9"]
        stored = client.get(entries[0].link.removeprefix("http://testserver"), headers={"Authorization": f"Bearer {KEY}"})
        assert stored.status_code == 200 and stored.json()["doc_id"] == "news/harbour-9"
