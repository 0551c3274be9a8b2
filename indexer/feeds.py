"""Follow news feeds: read RSS 2.0, Atom and JSON Feed, fetch each new or changed item's page,
extract its article (indexer/documents.py) and apply the change through the same all-or-nothing
path as POST /documents. The feeds' and pages' validators (ETag, Last-Modified) are kept in the
index folder (FEED_STATE), so a poll downloads only what changed, and a page whose text is what the
index already holds writes nothing.

Safe by default: http(s) only; item pages only from the feed's own host (or SEMSEARCH_FEED_HOSTS);
timeouts, a size cap and a redirect limit on every request; a pause between requests to one host.
A page that fails is logged and tried again at the next poll; nothing here raises for one bad item.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from indexer.documents import Document, content_hash, parse_html
from indexer.metadata import Metadata, from_fields, merged

log = logging.getLogger(__name__)

FEED_STATE = "feeds.json"
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class FeedLimits:
    timeout_s: float = 15.0
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    host_delay_s: float = 1.0  # between two requests to one host
    extra_hosts: tuple[str, ...] = ()  # item pages may also come from these hosts

    @classmethod
    def from_environment(cls) -> "FeedLimits":
        """SEMSEARCH_FEED_HOSTS (comma-separated), SEMSEARCH_FEED_TIMEOUT, SEMSEARCH_FEED_MAX_BYTES and
        SEMSEARCH_FEED_HOST_DELAY, each defaulting to the values above."""
        hosts = tuple(h.strip().lower() for h in os.environ.get("SEMSEARCH_FEED_HOSTS", "").split(",") if h.strip())

        def number(name: str, default: float) -> float:
            value = os.environ.get(name, default)
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {value!r}") from None

        return cls(timeout_s=number("SEMSEARCH_FEED_TIMEOUT", cls.timeout_s),
                   max_bytes=int(number("SEMSEARCH_FEED_MAX_BYTES", cls.max_bytes)),
                   host_delay_s=number("SEMSEARCH_FEED_HOST_DELAY", cls.host_delay_s), extra_hosts=hosts)


@dataclass
class PollReport:
    feeds: int = 0
    items: int = 0
    fetched: int = 0
    changed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class FetchError(Exception):
    """One request that did not give a usable answer (named in the log, retried next poll)."""


class Fetcher:
    """GETs with the limits: http(s) only, a size cap, a redirect limit, a pause per host."""

    def __init__(self, limits: FeedLimits) -> None:
        import httpx

        self.limits = limits
        self.client = httpx.Client(timeout=limits.timeout_s, follow_redirects=True,
                                   max_redirects=limits.max_redirects, headers={"User-Agent": "semsearch-follow/1"})
        self.last_request: dict[str, float] = {}

    def get(self, url: str, validators: dict | None = None) -> tuple[int, bytes, dict, str]:
        """(status, body, headers, final URL); 304 gives an empty body."""
        import httpx

        if urlsplit(url).scheme not in ("http", "https"):
            raise FetchError(f"{url}: only http and https addresses are fetched")
        host = urlsplit(url).netloc.lower()
        wait = self.last_request.get(host, 0.0) + self.limits.host_delay_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        headers = {}
        if validators and validators.get("etag"):
            headers["If-None-Match"] = validators["etag"]
        if validators and validators.get("last_modified"):
            headers["If-Modified-Since"] = validators["last_modified"]
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                body = bytearray()
                if response.status_code == 200:
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > self.limits.max_bytes:
                            raise FetchError(f"{url}: larger than {self.limits.max_bytes} bytes")
                final = str(response.url)
                if urlsplit(final).scheme not in ("http", "https"):
                    raise FetchError(f"{url}: redirected to {final}, not http(s)")
                return response.status_code, bytes(body), dict(response.headers), final
        except httpx.TooManyRedirects:
            raise FetchError(f"{url}: more than {self.limits.max_redirects} redirects") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
        finally:
            self.last_request[host] = time.monotonic()

    def close(self) -> None:
        self.client.close()


def read_state(root: Path) -> dict:
    try:
        return json.loads((root / FEED_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"feeds": {}, "pages": {}}


def write_state(root: Path, state: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{FEED_STATE}.tmp"
    staging.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(staging, root / FEED_STATE)


def validators(headers: dict) -> dict:
    return {"etag": headers.get("etag"), "last_modified": headers.get("last-modified")}


def iso(parsed) -> str | None:
    """A feedparser time tuple (UTC) as ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(calendar.timegm(parsed))) if parsed else None


@dataclass(frozen=True)
class Item:
    link: str
    title: str
    metadata: Metadata


def feed_items(body: bytes, feed_url: str) -> list[Item]:
    """The items of an RSS, Atom or JSON Feed document, with the feed's own date, author and tags."""
    if body.lstrip().startswith(b"{"):  # JSON Feed
        data = json.loads(body)
        return [Item(entry["url"], entry.get("title", ""), from_fields(
            {"published_at": entry.get("date_published"), "authors": [a.get("name") for a in entry.get("authors", [])
                                                                       if isinstance(a, dict)],
             "tags": entry.get("tags")}, feed_url)) for entry in data.get("items", []) if entry.get("url")]
    import feedparser

    parsed = feedparser.parse(body)
    if parsed.bozo and not parsed.entries:
        raise FetchError(f"{feed_url}: not a feed ({parsed.get('bozo_exception')})")
    return [Item(entry.link, entry.get("title", ""), from_fields(
        {"published_at": iso(entry.get("published_parsed") or entry.get("updated_parsed")),
         "authors": entry.get("author"), "tags": [t.get("term") for t in entry.get("tags", [])]}, feed_url))
        for entry in parsed.entries if entry.get("link")]


def poll(feed_urls: list[str], root: Path, apply, limits: FeedLimits = FeedLimits(), live_hashes=None) -> PollReport:
    """Poll each feed once and apply what changed: apply(documents) publishes them all or nothing.
    live_hashes(doc_ids) gives the content hash the index holds for each (to skip the unchanged)."""
    state, report, fetcher = read_state(root), PollReport(), Fetcher(limits)
    documents: dict[str, Document] = {}
    seen_pages: dict[str, dict] = {}
    try:
        for feed_url in feed_urls:
            report.feeds += 1
            known = state["feeds"].get(feed_url, {})
            try:
                status, body, headers, _ = fetcher.get(feed_url, known)
                if status == 304:
                    continue
                if status != 200:
                    raise FetchError(f"{feed_url}: HTTP {status}")
                items = feed_items(body, feed_url)
            except (FetchError, ValueError) as exc:
                report.failures.append(str(exc))
                log.warning("feed not read, tried again next poll: %s", exc)
                continue
            feed_host = (urlsplit(feed_url).hostname or "").lower()
            failed_before = len(report.failures)
            for item in items:
                report.items += 1
                host = (urlsplit(item.link).hostname or "").lower()
                if host != feed_host and host not in limits.extra_hosts:
                    report.failures.append(f"{item.link}: not on the feed's host {feed_host}")
                    log.warning("item skipped: %s is not on the feed's host %s (allow it with SEMSEARCH_FEED_HOSTS)",
                                item.link, feed_host)
                    continue
                page = page_document(fetcher, item, state["pages"].get(item.link, {}), report)
                if page is None:
                    continue
                document, page_state = page
                seen_pages[item.link] = page_state
                documents[document.doc_id] = document
            # The feed's validators only when every item was read: else a 304 next time would hide
            # the items that failed, which must be tried again.
            state["feeds"][feed_url] = validators(headers) if len(report.failures) == failed_before else {}
        held = live_hashes(list(documents)) if live_hashes and documents else {}
        changed = [d for d in documents.values() if held.get(d.doc_id) != content_hash(d)]
        if changed:
            apply(changed)
        report.changed = [d.doc_id for d in changed]
        state["pages"].update(seen_pages)
        write_state(root, state)  # after the change is published: a crash before it fetches again
    finally:
        fetcher.close()
    return report


def page_document(fetcher: Fetcher, item: Item, known: dict, report: PollReport) -> tuple[Document, dict] | None:
    """The item's page as a document (its final URL as id and source), or None when unchanged
    since the last poll (304) or when it failed (logged; tried again next poll)."""
    try:
        status, body, headers, final = fetcher.get(item.link, known)
        if status == 304:
            return None
        if status != 200:
            raise FetchError(f"{item.link}: HTTP {status}")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in HTML_TYPES:
            raise FetchError(f"{item.link}: not a web page ({kind or 'no content type'})")
    except FetchError as exc:
        report.failures.append(str(exc))
        log.warning("page not read, tried again next poll: %s", exc)
        return None
    report.fetched += 1
    try:
        raw = body.decode(charset(headers), errors="replace")
    except LookupError:  # a charset Python does not know
        raw = body.decode("utf-8", errors="replace")
    page = parse_html(raw, final, final)
    document = Document(doc_id=final, title=page.title or item.title or final, source=final, text=page.text,
                        metadata=merged(page.metadata, item.metadata))
    return document, validators(headers)


def charset(headers: dict) -> str:
    for part in headers.get("content-type", "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"
