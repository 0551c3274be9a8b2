"""The feed follower pointed at hostile or broken feeds: it fetches nothing the operator did not
allow, stops at its size cap and its deadline, and one bad feed or item never stops the rest.
Servers run on 127.0.0.1; other addresses are checked through the policy and a stand-in resolver,
never by connecting to them."""

from __future__ import annotations

import gzip
import json
import socket
import time
import tracemalloc
import zlib

import pytest

from indexer.feeds.fetch_policy import FetchPolicy, Refused, address_refusal, allowed_addresses, canonical_host, origin_of
from indexer.feeds.fetcher import FeedLimits, Fetcher, FetchError
from tests.conftest import STAND_IN, UNDATED, listed, rss, semsearch
from tests.sites import dripping, encoded

FAST = {**STAND_IN, "SEMSEARCH_FEED_TIMEOUT": "2", "SEMSEARCH_FEED_HOST_DELAY": "0"}
SECRET = "<html><body><article><h1>Admin</h1><p>SECRETTOKEN 81f3 is the key to the back office.</p></article></body></html>"


def follow(*feeds: str, index, env: dict | None = None):
    return semsearch("follow", *feeds, "--index", str(index), "--once", env={**FAST, **(env or {})})


def test_items_and_redirects_off_the_feeds_origin_are_never_fetched(site, other_site, tmp_path):
    other_site.serve("/admin", SECRET)
    other_site.serve("/admin2", SECRET)
    site.serve("/crane", UNDATED)
    site.serve("/to-admin", f"http://2130706433:{other_site.port}/admin", status=302)
    site.serve("/to-metadata", "http://169.254.169.254/latest/meta-data/", status=302)
    site.serve("/to-localhost", f"http://localhost:{site.port}/crane", status=307)
    site.serve("/feed.xml", rss(site.url, [("/crane", "Crane", "Fri, 06 Mar 2026 17:30:00 GMT"),
                                           ("/to-admin", "A", ""), ("/to-metadata", "M", ""), ("/to-localhost", "L", "")])
               .replace("</channel>", f"<item><link>{other_site.url}/admin</link></item>"
                                      f"<item><link>http://localhost:{other_site.port}/admin2</link></item></channel>"))
    index = tmp_path / "index"
    done = follow(f"{site.url}/feed.xml", index=index)
    printed = done.stdout + done.stderr
    assert done.returncode == 1 and "1 added or changed, 5 failed (5 refused by the fetch policy)" in printed, printed
    assert other_site.seen == []  # not one request reached the other origin
    for refused in (f"http://2130706433:{other_site.port}/admin", "http://169.254.169.254/latest/meta-data/",
                    f"http://localhost:{site.port}/crane", f"{other_site.url}/admin",
                    f"http://localhost:{other_site.port}/admin2"):
        assert f"{refused}: not on the feed's origin {site.url}" in printed, refused
    assert listed(index) == [f"{site.url}/crane"]
    found = semsearch("search", "SECRETTOKEN", "--index", str(index), "--json", "--min-relevance", "0", env=STAND_IN)
    assert not any("SECRETTOKEN" in hit["text"] for hit in json.loads(found.stdout)["results"])

    # The operator can allow the other origin, exactly: then (and only then) it is fetched.
    done = follow(f"{site.url}/feed.xml", index=index, env={"SEMSEARCH_FEED_HOSTS": f"127.0.0.1:{other_site.port}"})
    assert "(3 refused by the fetch policy)" in done.stdout, done.stdout + done.stderr
    assert set(listed(index)) == {f"{site.url}/crane", f"{other_site.url}/admin",
                                  f"http://2130706433:{other_site.port}/admin"}  # the redirect's own address


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("10.1.2.3", "private"), ("172.16.5.4", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"),
    ("224.0.0.251", "multicast"), ("240.0.0.1", "reserved"), ("100.64.0.7", "not a public"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fd00::5", "private"),
    ("ff02::1", "multicast"), ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("2002:7f00:1::", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"), ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "")])
def test_internal_addresses_are_refused_in_every_spelling(address, reason):
    assert reason in (address_refusal(address) or "refused-missing")


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.215.14"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(address) is None


def test_numeric_spellings_of_a_host_are_one_origin():
    assert {canonical_host(h) for h in ("2130706433", "0x7f.1", "0177.0.0.1", "127.0.0.1", "127.1")} == {"127.0.0.1"}
    assert canonical_host("[::FFFF:7f00:1]".strip("[]")) == "::ffff:7f00:1" and canonical_host("News.Example.ORG.") \
        == "news.example.org"
    assert origin_of("HTTP://News.example.org:80/a") == origin_of("http://news.example.org/b")
    for bad in ("ftp://news.example.org/", "file:///etc/passwd", "http://[zz/", "http:///nohost", "http://a:99999/"):
        with pytest.raises(ValueError):
            origin_of(bad)


def fake_resolver(table: dict[str, list[str]]):
    """getaddrinfo's answers for named hosts (the real resolver is never asked)."""

    def resolve(host, port, type=0, **_):  # noqa: A002 (getaddrinfo's name)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]
    return resolve


def test_the_policy_names_what_it_allows():
    feed = origin_of("https://news.example.org/feed.xml")
    policy = FetchPolicy.parse("cdn.example.net, 10.0.0.5:8080, *.wires.example.com")
    assert policy.permit("https://news.example.org/a", feed).any_address
    assert policy.permit("https://cdn.example.net/a", feed).any_address  # listed exactly, on its default port
    assert policy.permit("http://10.0.0.5:8080/a", feed).any_address
    assert not policy.permit("https://eu.wires.example.com/a", feed).any_address  # a pattern: public addresses only
    for refused in ("http://news.example.org/a", "https://news.example.org:8443/a", "https://cdn.example.net:8443/",
                    "http://10.0.0.5/a", "https://wires.example.com.evil.test/", "https://example.com/"):
        with pytest.raises(Refused):
            policy.permit(refused, feed)
    with pytest.raises(ValueError, match="SEMSEARCH_FEED_HOSTS"):
        FetchPolicy.parse("news.example.org/path")
    anywhere = FetchPolicy.parse("*")
    resolver = fake_resolver({"rebound.example.org": ["127.0.0.1"], "mixed.example.org": ["10.0.0.1", "93.184.215.14"]})
    with pytest.raises(Refused, match="127.0.0.1 \\(a loopback address\\)"):
        allowed_addresses("rebound.example.org", 443, anywhere.permit("https://rebound.example.org/", feed).any_address,
                          resolver)
    assert allowed_addresses("mixed.example.org", 443, False, resolver) == ["93.184.215.14"]
    assert allowed_addresses("rebound.example.org", 443, True, resolver) == ["127.0.0.1"]


def test_the_address_is_checked_when_the_connection_is_made(site):
    """A name that resolves to an internal address is refused at connect time unless named exactly;
    named exactly, the connection goes to the address that was checked."""
    site.serve("/page", UNDATED)
    resolver = fake_resolver({"news.example.org": ["127.0.0.1"]})
    feed = origin_of("https://feeds.example.org/feed.xml")
    pattern = FeedLimits(host_delay_s=0, policy=FetchPolicy.parse("*.example.org"))
    with pytest.raises(Refused, match="resolves to 127.0.0.1"):
        Fetcher(pattern, resolver=resolver).get(f"http://news.example.org:{site.port}/page", feed)
    assert site.seen == []
    exact = FeedLimits(host_delay_s=0, policy=FetchPolicy.parse(f"news.example.org:{site.port}"))
    answer = Fetcher(exact, resolver=resolver).get(f"http://news.example.org:{site.port}/page", feed)
    assert answer.status == 200 and b"container crane" in answer.body
    assert site.hosts == [f"news.example.org:{site.port}"]


def bomb(size: int) -> bytes:
    """gzip of `size` zero bytes, made a megabyte at a time."""
    packer, zeros, out = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20), []
    for _ in range(size >> 20):
        out.append(packer.compress(zeros))
    return b"".join(out) + packer.flush()


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    return bomb(1 << 30)


def test_compressed_bombs_stop_at_the_cap_without_filling_memory(site, gigabyte_bomb):
    site.serve("/twice", encoded(gzip.compress(gigabyte_bomb), "gzip, gzip"))
    site.serve("/once", encoded(gigabyte_bomb, "gzip"))
    site.serve("/fine", encoded(gzip.compress(UNDATED.encode()), "gzip"))
    fetcher = Fetcher(FeedLimits(host_delay_s=0, max_bytes=2_000_000))
    feed = origin_of(site.url)
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="more than one Content-Encoding"):
            fetcher.get(f"{site.url}/twice", feed)
        with pytest.raises(FetchError, match="larger than 2000000 bytes once decoded"):
            fetcher.get(f"{site.url}/once", feed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12_000_000  # a few times the cap, never the gigabyte
    assert b"container crane" in fetcher.get(f"{site.url}/fine", feed).body


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_cannot_hold_a_poll_past_the_deadline(site, tmp_path, in_headers):
    site.serve("/drip", dripping(0.2, in_headers))
    site.serve("/crane", UNDATED)
    site.serve("/feed.xml", rss(site.url, [("/drip", "Drip", ""), ("/crane", "Crane", "")]))
    started = time.monotonic()
    done = follow(f"{site.url}/feed.xml", index=tmp_path / "index")
    took = time.monotonic() - started
    assert done.returncode == 1 and "/drip: no whole answer within 2 s" in done.stderr, done.stderr
    assert "1 added or changed, 1 failed" in done.stdout
    assert took < 12  # 2 s for the drip, the rest is starting Python (unbounded before: as long as it dripped)


BAD_FEEDS = {
    "/items-not-objects.json": json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": [1, "x"]}),
    "/url-not-string.json": json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": [{"url": 5}]}),
    "/items-not-list.json": json.dumps({"items": 5}),
    "/not-json.json": "{ this is not json",
    "/broken-link.xml": '<?xml version="1.0"?><rss version="2.0"><channel><item><link>http://[zz</link></item>'
                        '</channel></rss>',
    "/not-a-feed.xml": "<html><body>no feed here</body></html>",
}


def test_one_malformed_feed_never_stops_the_others(site, tmp_path):
    for path, body in BAD_FEEDS.items():
        site.serve(path, body, kind="application/json" if path.endswith(".json") else "application/xml")
    site.serve("/crane", UNDATED)
    site.serve("/good.xml", rss(site.url, [("/crane", "Crane", "Fri, 06 Mar 2026 17:30:00 GMT")]))
    index = tmp_path / "index"
    done = follow(*(f"{site.url}{path}" for path in BAD_FEEDS), f"{site.url}/good.xml", index=index)
    printed = done.stdout + done.stderr
    assert done.returncode == 1 and "7 feeds" in done.stdout and "1 added or changed" in done.stdout, printed
    assert "Traceback" not in printed
    for named in ("items-not-objects.json: item 1 has no url", "url-not-string.json: item 1 has no url",
                  "items-not-list.json: not a JSON Feed", "not-json.json: not a JSON Feed",
                  "broken-link.xml: item 1 has no link that can be read ('http://[zz')", "not-a-feed.xml: not a feed"):
        assert named in printed, named
    assert listed(index) == [f"{site.url}/crane"]


def test_followed_pages_obey_the_document_size_limit_and_are_written_in_batches(site, tmp_path):
    from indexer.feeds.follow import BATCH_DOCUMENTS, poll

    pages = BATCH_DOCUMENTS * 2 + 3
    for number in range(pages):
        site.serve(f"/p{number}", UNDATED.replace("crane", f"crane number {number}"))
    site.serve("/long", "<html><body><article>" + "<p>A very long report on harbour dredging works.</p>" * 200
               + "</article></body></html>")
    site.serve("/feed.xml", rss(site.url, [(f"/p{n}", f"P{n}", "") for n in range(pages)] + [("/long", "Long", "")]))
    batches: list[int] = []
    report = poll([f"{site.url}/feed.xml"], tmp_path, lambda documents: batches.append(len(documents)),
                  FeedLimits(host_delay_s=0, max_document_chars=5000))
    assert sum(batches) == pages and max(batches) <= BATCH_DOCUMENTS and len(batches) == 3
    [failure] = report.failures
    assert failure.startswith(f"{site.url}/long: the article is ") and failure.endswith(
        " characters, more than SEMSEARCH_MAX_DOCUMENT_CHARS (5000)")


def test_the_service_stops_within_the_deadline_while_a_feed_drips(site, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from indexer.settings import Settings

    site.serve("/feed.xml", dripping(0.2))
    settings = Settings(index_dir=tmp_path / "index", model_path="hashing", reload_interval=0,
                        feeds=f"{site.url}/feed.xml", feed_interval=3600, feed_timeout=2)
    with TestClient(create_app(settings)):
        while "/feed.xml" not in site.paths():  # the follower is inside the fetch
            time.sleep(0.05)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 4  # the fetch's deadline (2 s), not as long as the server drips


def test_a_resolver_that_hangs_fails_the_request_at_its_deadline():
    def hanging(host, port, type=0, **_):  # noqa: A002 (getaddrinfo's name)
        time.sleep(30)
        return []

    fetcher = Fetcher(FeedLimits(timeout_s=1, host_delay_s=0, policy=FetchPolicy.parse("*")), resolver=hanging)
    started = time.monotonic()
    with pytest.raises(FetchError, match="no whole answer within 1 s"):
        fetcher.get("http://slow-dns.example.org/a", origin_of("http://feeds.example.org/feed.xml"))
    assert time.monotonic() - started < 3


def test_the_connection_goes_only_to_the_origin_the_policy_allowed():
    """Should the HTTP library ever read a URL otherwise than the policy did, it still cannot
    connect anywhere else: the socket layer checks the host and port it is asked for."""
    from indexer.feeds.fetch_policy import Permit
    from indexer.feeds.fetcher import GuardedBackend

    backend = GuardedBackend(Permit(origin_of("http://127.0.0.1:9001/feed.xml"), True), time.monotonic() + 5,
                             fake_resolver({}))
    with pytest.raises(Refused, match="is not http://127.0.0.1:9001"):
        backend.connect_tcp("127.0.0.1", 9002)
    with pytest.raises(Refused):
        backend.connect_tcp("localhost", 9001)
