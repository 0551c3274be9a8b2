"""Following feeds: `semsearch follow FEED_URL --once` against a local HTTP server started by the
test, serving a feed and its pages (a good page, one without a date, a 404, a slow page, a
non-HTML item, an oversized page, a page on another host), then an update and a feed that
disappears. Conditional requests keep a second poll from fetching what has not changed."""

from __future__ import annotations

import json
import time


from indexer.feeds.follow import feed_items
from tests.conftest import MILVUS_SLOW, STAND_IN, UNDATED, listed, rss, semsearch
from tests.sites import slow
from bench.extraction import PAGES

ROOF = (PAGES / "stadium-roof--with-comments.html").read_text(encoding="utf-8")


FOLLOW_ENV = {**STAND_IN, "SEMSEARCH_FEED_TIMEOUT": "1", "SEMSEARCH_FEED_MAX_BYTES": "200000",
              "SEMSEARCH_FEED_HOST_DELAY": "0"}


def follow(site, index, engine_kind: str) -> tuple[int, str]:
    done = semsearch("follow", f"{site.url}/feed.xml", "--index", str(index), "--once",
                     env={**FOLLOW_ENV, "SEMSEARCH_ENGINE": engine_kind})
    return done.returncode, done.stdout + done.stderr


def shown(index, doc_id: str) -> dict:
    return json.loads(semsearch("show", doc_id, "--index", str(index), "--json", env=STAND_IN).stdout)


@MILVUS_SLOW  # ten commands, each starting Milvus Lite: about 17 s there
def test_following_a_feed_indexes_its_articles_and_keeps_them_current(site, tmp_path, engine_kind):
    index = tmp_path / "index"
    site.serve("/roof", ROOF)
    site.serve("/crane", UNDATED)
    site.serve("/slow", slow(3))
    site.serve("/report.pdf", b"%PDF-1.4 binary", kind="application/pdf")
    site.serve("/huge", "<html><body>" + "<p>Filler paragraph for size.</p>" * 20_000 + "</body></html>")
    site.serve("/old-roof-address", "/roof", status=301)  # the same article under an older address
    site.serve("/broken", "<html><body><div><p>The pier reopened after <b>repairs to its deck and")  # cut off
    site.serve("/feed.xml", rss(site.url, [("/roof", "Roof", "Mon, 02 Mar 2026 09:00:00 GMT"),
                                           ("/crane", "Crane", "Fri, 06 Mar 2026 17:30:00 GMT"),
                                           ("/gone", "Gone", "Fri, 06 Mar 2026 18:00:00 GMT"),
                                           ("/slow", "Slow", "Fri, 06 Mar 2026 18:00:00 GMT"),
                                           ("/report.pdf", "Report", "Fri, 06 Mar 2026 18:00:00 GMT"),
                                           ("/huge", "Huge", "Fri, 06 Mar 2026 18:00:00 GMT"),
                                           ("/old-roof-address", "Roof again", "Mon, 02 Mar 2026 09:00:00 GMT"),
                                           ("/broken", "Pier", "Sat, 07 Mar 2026 08:00:00 GMT")])
              # an item on another host (localhost, not 127.0.0.1): not fetched unless allowed
              .replace("</channel>", f"<item><title>Away</title><link>{site.url.replace('127.0.0.1', 'localhost')}"
                                     "/roof</link></item></channel>"))
    code, printed = follow(site, index, engine_kind)
    assert code == 1 and "3 added or changed, 5 failed" in printed  # the bad items are named, never a crash
    for reason in ("/gone: HTTP 404", "/slow: no whole answer within 1 s", "not a web page (application/pdf)",
                   "/huge: larger than", "not on the feed's origin http://127.0.0.1:"):
        assert reason in printed, reason
    # The redirect is the same document as /roof; the cut-off page is kept as read.
    assert set(listed(index)) == {f"{site.url}/roof", f"{site.url}/crane", f"{site.url}/broken"}
    documents = {doc_id: shown(index, f"{site.url}/{doc_id}") for doc_id in ("roof", "crane", "broken")}
    assert "repairs to its deck" in documents["broken"]["text"]
    roof, crane = documents["roof"], documents["crane"]
    assert roof["source"] == f"{site.url}/roof" and "corrosion in the steel beams" in roof["text"]
    assert "About time too" not in roof["text"] and roof["published_at"] == "2026-03-02T08:30:00Z"  # the page's own
    assert crane["published_at"] == "2026-03-06T17:30:00Z" and crane["tags"] == ["harbour"]  # the feed's, lacking them

    site.seen.clear()
    code, printed = follow(site, index, engine_kind)  # nothing changed: conditional requests, nothing written
    assert "0 added or changed" in printed
    assert all(conditional for path, conditional in site.seen if path in ("/roof", "/crane"))

    site.serve("/crane", UNDATED.replace("second container crane", "second and larger container crane"))
    code, printed = follow(site, index, engine_kind)
    assert "1 added or changed" in printed
    assert "second and larger container crane" in shown(index, f"{site.url}/crane")["text"]

    del site.routes["/feed.xml"]  # the feed disappears: said, and nothing is deleted
    code, printed = follow(site, index, engine_kind)
    assert code == 1 and "feed.xml: HTTP 404" in printed and len(listed(index)) == 3


def test_atom_and_json_feeds_give_their_items_with_the_feeds_metadata():
    atom = ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
            '<entry><title>Ferry</title><link href="https://news.example.org/ferry"/><id>1</id>'
            '<updated>2026-02-03T10:00:00Z</updated><author><name>Tomas Lindqvist</name></author>'
            '<category term="transport"/></entry></feed>').encode()
    [item] = feed_items(atom, "https://news.example.org/atom.xml").items
    assert item.link == "https://news.example.org/ferry" and item.metadata.published_at == "2026-02-03T10:00:00Z"
    assert item.metadata.authors == ("Tomas Lindqvist",) and item.metadata.tags == ("transport",)
    jsonfeed = json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [
        {"id": "2", "url": "https://news.example.org/dam", "title": "Dam", "date_published": "2026-05-01T08:00:00+02:00",
         "authors": [{"name": "Helen Okoye"}], "tags": ["energy"]}]}).encode()
    [item] = feed_items(jsonfeed, "https://news.example.org/feed.json").items
    assert item.link == "https://news.example.org/dam" and item.metadata.published_at == "2026-05-01T06:00:00Z"
    assert item.metadata.authors == ("Helen Okoye",) and item.metadata.tags == ("energy",)


def test_the_service_follows_its_configured_feeds_in_the_background(site, tmp_path, engine_kind):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from indexer.settings import Settings

    site.serve("/roof", ROOF)
    site.serve("/feed.xml", rss(site.url, [("/roof", "Roof", "Mon, 02 Mar 2026 09:00:00 GMT"),
                                           ("/gone", "Gone", "Mon, 02 Mar 2026 10:00:00 GMT")])
               .replace("</channel>", f"<item><link>http://localhost:{site.port}/roof</link></item></channel>"))
    settings = Settings(index_dir=tmp_path / "index", model_path="hashing", reload_interval=0, engine=engine_kind,
                        feeds=f"{site.url}/feed.xml", feed_interval=3600, feed_host_delay=0)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        ready = client.get("/readyz").json()
        while not ready.get("feeds", {}).get("polls") and time.monotonic() < deadline:  # no index until the first poll
            time.sleep(0.2)
            ready = client.get("/readyz").json()
        assert ready["feeds"]["followed"] == 1 and ready["feeds"]["polls"] == 1 and ready["feeds"]["items_fetched"] == 1
        assert ready["feeds"]["failures"] == 2 and ready["feeds"]["refusals"] == 1
        assert "/gone: HTTP 404" in ready["feeds"]["last_failures"][0]
        assert "not on the feed's origin" in ready["feeds"]["last_failures"][1]
        found = client.get("/search", params={"q": "stadium roof corrosion", "min_relevance": 0}).json()["results"]
        assert found and found[0]["source"] == f"{site.url}/roof"
        metrics = client.get("/metrics").text
        assert "semsearch_feed_items_fetched_total 1.0" in metrics and "semsearch_feeds_followed 1.0" in metrics
        assert "semsearch_feed_refusals_total 1.0" in metrics
        assert "semsearch_feed_failures_total 2.0" in metrics and "semsearch_feed_last_poll_timestamp_seconds 1" in metrics


def test_a_feed_setting_that_is_not_a_number_is_a_clear_error(tmp_path):
    done = semsearch("follow", "http://127.0.0.1:9/feed.xml", "--index", str(tmp_path / "index"), "--once",
                     env={**STAND_IN, "SEMSEARCH_FEED_TIMEOUT": "soon"})
    assert done.returncode == 2 and "SEMSEARCH_FEED_TIMEOUT is 'soon': it should be a number" in done.stderr
