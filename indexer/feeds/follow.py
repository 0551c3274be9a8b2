"""Follow news feeds: read RSS 2.0, Atom and JSON Feed, fetch each new or changed item's page,
extract its article (indexer/text/documents.py) and apply the changes through the same all-or-nothing
path as POST /documents, a small batch at a time. The feeds' and pages' validators (ETag,
Last-Modified) are kept in the index folder (FEED_STATE), so a poll downloads only what changed,
and a page whose text is what the index already holds writes nothing.

Every request goes through indexer/feeds/fetcher.py (the fetch policy, size caps, one deadline). A feed
or an item that fails, for whatever reason, is named in the report and the log and tried again at
the next poll; it never stops the other feeds or items of the poll.
"""

from __future__ import annotations

import calendar
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

from indexer.text.documents import Document, content_hash, parse_html
from indexer.index.durable import write_file
from indexer.feeds.fetch_policy import Origin, Refused, origin_of
from indexer.feeds.fetcher import FeedLimits, Fetcher, FetchError
from indexer.text.metadata import Metadata, from_fields, merged

log = logging.getLogger(__name__)

FEED_STATE = "feeds.json"
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Pages are written as they come, a batch at a time: a poll holds at most this much of them.
BATCH_DOCUMENTS = 16
BATCH_CHARS = 2_000_000


@dataclass
class PollReport:
    feeds: int = 0
    items: int = 0
    fetched: int = 0
    changed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # every feed or item not read, refusals included
    refusals: int = 0  # of the failures, requests the fetch policy refused
    failed_feeds: list[str] = field(default_factory=list)  # feeds that could not be read at all

    def fail(self, problem: Exception | str, what: str = "item", url: str = "") -> None:
        """Name a feed or item (at url) that was not read; it is tried again at the next poll."""
        named = str(problem) if str(problem).startswith(url) else f"{url}: {problem}"
        if isinstance(problem, Refused):
            self.refusals += 1
            log.warning("%s refused by the fetch policy: %s", what, named)
        else:
            log.warning("%s not read, tried again next poll: %s", what, named)
        self.failures.append(named)


def read_state(root: Path) -> dict:
    try:
        state = json.loads((root / FEED_STATE).read_text(encoding="utf-8"))
        if isinstance(state, dict) and isinstance(state.get("feeds"), dict) and isinstance(state.get("pages"), dict):
            return state
    except (OSError, ValueError):
        pass
    return {"feeds": {}, "pages": {}}


def write_state(root: Path, state: dict) -> None:
    write_file(root / FEED_STATE, json.dumps(state, indent=1, sort_keys=True))


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


@dataclass
class FeedRead:
    items: list[Item] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries that are not items, each named


def text(value: object) -> str:
    return value.strip()[:1000] if isinstance(value, str) else ""


def absolute(link: object, feed_url: str) -> str | None:
    """An item's link as an absolute URL, or None when it is no URL at all."""
    if not isinstance(link, str) or not link.strip():
        return None
    try:
        return urljoin(feed_url, link.strip())
    except ValueError:  # http://[zz and the like
        return None


def feed_items(body: bytes, feed_url: str) -> FeedRead:
    """The items of an RSS, Atom or JSON Feed document, with the feed's own date, author and tags;
    entries that cannot be items (no link, a link that is not a string) are named in skipped.
    FetchError when the document is no feed at all."""
    read = FeedRead()
    if body.lstrip().startswith(b"{"):  # JSON Feed
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise FetchError(f"{feed_url}: not a JSON Feed ({exc})") from None
        entries = data.get("items") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise FetchError(f"{feed_url}: not a JSON Feed (no list of items)")
        for number, entry in enumerate(entries, 1):
            link = absolute(entry.get("url"), feed_url) if isinstance(entry, dict) else None
            if link is None:
                read.skipped.append(f"{feed_url}: item {number} has no url that can be read; skipped")
                continue
            authors = entry.get("authors") if isinstance(entry.get("authors"), list) else [entry.get("author")]
            read.items.append(Item(link, text(entry.get("title")), from_fields(
                {"published_at": entry.get("date_published"),
                 "authors": [a.get("name") for a in authors if isinstance(a, dict)],
                 "tags": [t for t in entry.get("tags") or () if isinstance(t, str)]
                 if isinstance(entry.get("tags"), list) else None}, feed_url)))
        return read
    import feedparser

    parsed = feedparser.parse(body)
    if not parsed.entries and (parsed.bozo or not parsed.version):
        why = parsed.get("bozo_exception") or "no RSS, Atom or JSON Feed in it"
        raise FetchError(f"{feed_url}: not a feed ({why})")
    for number, entry in enumerate(parsed.entries, 1):
        link = absolute(entry.get("link"), feed_url)
        if link is None:
            read.skipped.append(f"{feed_url}: item {number} has no link that can be read ({entry.get('link')!r}); "
                                "skipped")
            continue
        read.items.append(Item(link, text(entry.get("title")), from_fields(
            # dict.get: feedparser warns when updated_parsed is asked for and missing
            {"published_at": iso(dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")),
             "authors": entry.get("author"), "tags": [t.get("term") for t in entry.get("tags", [])]}, feed_url)))
    return read


class WriteFailed(Exception):
    """Publishing a batch failed: not one feed's fault, so the poll stops and the cause is raised."""


class Batch:
    """Pages read but not yet written: written (all or nothing, the unchanged left out) when the
    batch is full or a feed is done, so a poll holds a bounded amount of text whatever its size."""

    def __init__(self, root: Path, state: dict, apply, live_hashes, report: PollReport) -> None:
        self.root, self.state, self.apply, self.live_hashes, self.report = root, state, apply, live_hashes, report
        self.documents: dict[str, Document] = {}
        self.pages: dict[str, dict] = {}
        self.chars = 0

    def add(self, link: str, document: Document, page_state: dict) -> None:
        self.documents[document.doc_id] = document
        self.pages[link] = page_state
        self.chars += len(document.text)
        if len(self.documents) >= BATCH_DOCUMENTS or self.chars >= BATCH_CHARS:
            self.write()

    def write(self) -> None:
        """Publish what changed, then remember the pages' validators (after: a crash fetches again)."""
        if self.documents:
            held = self.live_hashes(list(self.documents)) if self.live_hashes else {}
            changed = [d for d in self.documents.values() if held.get(d.doc_id) != content_hash(d)]
            if changed:
                try:
                    self.apply(changed)
                except Exception as exc:
                    raise WriteFailed() from exc
            self.report.changed += [d.doc_id for d in changed]
        self.state["pages"].update(self.pages)
        write_state(self.root, self.state)
        self.documents, self.pages, self.chars = {}, {}, 0


def poll(feed_urls: list[str], root: Path, apply, limits: FeedLimits = FeedLimits(), live_hashes=None,
         stop: threading.Event | None = None, fetcher: Fetcher | None = None) -> PollReport:
    """Poll each feed once and apply what changed: apply(documents) publishes them all or nothing.
    live_hashes(doc_ids) gives the content hash the index holds for each (to skip the unchanged).
    Stops between two requests once `stop` is set."""
    stop = stop or threading.Event()
    state, report = read_state(root), PollReport()
    fetcher = fetcher or Fetcher(limits, stop)
    batch = Batch(root, state, apply, live_hashes, report)
    for feed_url in feed_urls:
        if stop.is_set():
            break
        report.feeds += 1
        failed_before = len(report.failures)
        try:
            done = follow_feed(fetcher, feed_url, state, batch, report, stop)
        except WriteFailed as failed:
            raise failed.__cause__ from None
        except (FetchError, Refused, ValueError) as exc:
            report.fail(exc, "feed", feed_url)
            report.failed_feeds.append(feed_url)
            done = False
        except Exception as exc:  # whatever one feed does, the others are still read
            log.debug("feed %s failed", feed_url, exc_info=True)
            report.fail(f"{type(exc).__name__}: {exc}", "feed", feed_url)
            report.failed_feeds.append(feed_url)
            done = False
        try:
            batch.write()  # the feed's pages, before its validators are kept
        except WriteFailed as failed:
            raise failed.__cause__ from None
        # The feed's validators only when every item was read: else a 304 next time would hide
        # the items that failed, which must be tried again.
        if done is not None:
            state["feeds"][feed_url] = done if done and len(report.failures) == failed_before else {}
    write_state(root, state)
    return report


def follow_feed(fetcher: Fetcher, feed_url: str, state: dict, batch: Batch, report: PollReport,
                stop: threading.Event) -> dict | None:
    """Read one feed and add its changed pages to the batch; the feed's validators (None: unchanged)."""
    feed: Origin = origin_of(feed_url)
    answer = fetcher.get(feed_url, feed, state["feeds"].get(feed_url, {}))
    if answer.status == 304:
        return None
    if answer.status != 200:
        raise FetchError(f"{feed_url}: HTTP {answer.status}")
    read = feed_items(answer.body, feed_url)
    for problem in read.skipped:
        report.fail(problem)
    for item in read.items:
        if stop.is_set():
            return {}
        report.items += 1
        try:
            page = page_document(fetcher, feed, item, state["pages"].get(item.link, {}))
        except (FetchError, Refused, ValueError) as exc:
            report.fail(exc, "item", item.link)
            continue
        except Exception as exc:  # one item's page never stops the feed
            log.debug("item %s failed", item.link, exc_info=True)
            report.fail(f"{type(exc).__name__}: {exc}", "item", item.link)
            continue
        if page is None:
            continue
        report.fetched += 1
        document, page_state = page
        if len(document.text) > fetcher.limits.max_document_chars:
            report.fail(f"{item.link}: the article is {len(document.text)} characters, more than "
                        f"SEMSEARCH_MAX_DOCUMENT_CHARS ({fetcher.limits.max_document_chars})")
            continue
        batch.add(item.link, document, page_state)
    return validators(answer.headers)


def page_document(fetcher: Fetcher, feed: Origin, item: Item, known: dict) -> tuple[Document, dict] | None:
    """The item's page as a document (its final URL as id and source), or None when unchanged
    since the last poll (304). FetchError or Refused when it cannot be read."""
    answer = fetcher.get(item.link, feed, known)
    if answer.status == 304:
        return None
    if answer.status != 200:
        raise FetchError(f"{item.link}: HTTP {answer.status}")
    kind = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in HTML_TYPES:
        raise FetchError(f"{item.link}: not a web page ({kind or 'no content type'})")
    try:
        raw = answer.body.decode(charset(answer.headers), errors="replace")
    except LookupError:  # a charset Python does not know
        raw = answer.body.decode("utf-8", errors="replace")
    page = parse_html(raw, answer.url, answer.url)
    document = Document(doc_id=answer.url, title=page.title or item.title or answer.url, source=answer.url,
                        text=page.text, metadata=merged(page.metadata, item.metadata))
    return document, validators(answer.headers)


def charset(headers: dict) -> str:
    for part in headers.get("content-type", "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"
