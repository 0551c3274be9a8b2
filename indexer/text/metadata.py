"""What a news article says about itself: published and updated times, authors, outlet, language
and tags, read from HTML meta tags (Open Graph, article:*) and JSON-LD NewsArticle blocks,
Markdown front matter, JSON Lines fields and plain-text `Key: value` header lines (pure: no I/O).

Times are kept as ISO 8601 in UTC (`2026-03-05T14:00:00Z`); a time without a zone is taken as
UTC, a date alone as its midnight UTC. A value that cannot be read is a warning naming where it
was and what it said; the article is always kept.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
from dataclasses import dataclass, fields
from datetime import date, datetime, timezone
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

# Every name a source may use for a field (lowercase), by the field it fills.
ALIASES = {
    "published_at": ("published_at", "published", "date", "datepublished", "article:published_time",
                     "pubdate", "publish_date", "published_time"),
    "updated_at": ("updated_at", "updated", "modified", "datemodified", "article:modified_time", "last_modified",
                   "modified_at"),
    "authors": ("authors", "author", "by", "article:author", "byline"),
    "outlet": ("outlet", "og:site_name", "site_name", "site", "publisher"),
    "language": ("language", "lang", "inlanguage"),
    "tags": ("tags", "tag", "keywords", "article:tag", "article:section", "articlesection", "section", "category"),
}
FIELD_OF = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
TIMES = ("published_at", "updated_at")
LISTS = ("authors", "tags")
MAX_ITEMS = 50


@dataclass(frozen=True)
class Metadata:
    """An article's metadata; every field optional."""

    published_at: str | None = None
    updated_at: str | None = None
    authors: tuple[str, ...] = ()
    outlet: str | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def record(self) -> dict:
        """The fields as every search result carries them (lists as lists, absent as null)."""
        return {f.name: list(getattr(self, f.name)) if f.name in LISTS else getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str | None:
        return json.dumps(self.record(), ensure_ascii=False, sort_keys=True) if self else None

    @classmethod
    def from_json(cls, text: str | None) -> "Metadata":
        if not text:
            return cls()
        stored = json.loads(text)
        return cls(**{name: tuple(stored.get(name) or ()) if name in LISTS else stored.get(name)
                      for name in ALIASES})


def utc_time(value: object, where: str, name: str) -> str | None:
    """value as ISO 8601 UTC, or None with a warning naming where, the value and why."""
    found, problem = parse_utc(value)
    if problem is not None:
        log.warning("%s: %s %r %s; that value is ignored", where, name, value, problem)
    return found


def parse_utc(value: object) -> tuple[str | None, str | None]:
    """(value as ISO 8601 UTC, None), or (None, why it cannot be read); (None, None) when empty."""
    if value is None or value == "":
        return None, None
    text = str(value).strip()
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(text)  # RFC 2822, as in feeds and mail
            except (TypeError, ValueError, IndexError):
                parsed = written_date(text)
    if parsed is None or not isinstance(value, (str, int, float)):
        return None, "is not an ISO 8601 (or RFC 2822) date or date-time"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z", None
    except OverflowError:  # 0001-01-01T00:00+05:00 is in year 0 in UTC
        return None, "is a valid date-time, but out of range: in UTC it falls before the year 1 or after 9999"


def written_date(text: str) -> datetime | None:
    """A date as pages write it in their meta tags ("November 19, 2019", "2019/11/19 00:21",
    "19.11.2019", day first with dots as in Europe), when it holds a four-digit year (so a stray
    number is never taken for a day of this month)."""
    from dateutil import parser

    if not re.search(r"(?<!\d)\d{4}(?!\d)", text) or len(text) > 64:
        return None
    try:
        return parser.parse(text, dayfirst="." in text, fuzzy=False)
    except (ValueError, OverflowError):
        return None


def names(value: object) -> tuple[str, ...]:
    """Names from a comma-separated string, a list of names, or JSON-LD objects with a name (a
    list's items are never split: "Smith, Jane" in a list is one author)."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list = value.split(",")
    else:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    found = [(item.get("name") if isinstance(item, Mapping) else item) for item in items]
    unique = list(dict.fromkeys(name.strip()[:200] for name in found if isinstance(name, str) and name.strip()))
    return tuple(unique[:MAX_ITEMS])


def single(value: object) -> str | None:
    """One short string: the first of a list, a JSON-LD object's name."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("name")
    return value.strip()[:200] or None if isinstance(value, str) else None


def from_fields(found: Mapping[str, object], where: str) -> Metadata:
    """Metadata from named values (any alias of ALIASES, any case); a value may be a list (several
    meta tags of one name, a JSON list)."""
    wanted: dict[str, list] = {}
    for key, value in found.items():
        name = FIELD_OF.get(str(key).strip().lower())
        if name is not None and value not in (None, "", [], ()):
            wanted.setdefault(name, []).append(value)
    values: dict[str, object] = {}
    for name, raw in wanted.items():
        if name in LISTS:
            values[name] = tuple(dict.fromkeys(n for value in raw for n in names(value)))[:MAX_ITEMS]
            continue
        first = raw[0][0] if isinstance(raw[0], (list, tuple)) else raw[0]
        values[name] = utc_time(first, where, name) if name in TIMES else single(first)
    return Metadata(**values)


def merged(first: Metadata, then: Metadata) -> Metadata:
    """first's fields, with then's where first has none."""
    return Metadata(**{f.name: getattr(first, f.name) or getattr(then, f.name) for f in fields(Metadata)})


ARTICLE_TYPES = re.compile(r"(Article|BlogPosting|Report)$")


def json_ld(blocks: Iterable[str], where: str) -> Metadata:
    """The first NewsArticle (or Article, BlogPosting, ...) object in JSON-LD script blocks."""
    for block in blocks:
        try:
            data = json.loads(block)
        except ValueError:
            log.warning("%s: a JSON-LD block is not valid JSON; skipped", where)
            continue
        for item in walk(data):
            kinds = item.get("@type")
            kinds = kinds if isinstance(kinds, list) else [kinds]
            if any(isinstance(k, str) and ARTICLE_TYPES.search(k) for k in kinds):
                return from_fields({"datePublished": item.get("datePublished"), "dateModified": item.get("dateModified"),
                                    "author": names(item.get("author")), "publisher": single(item.get("publisher")),
                                    "inLanguage": single(item.get("inLanguage")),
                                    "keywords": list(names(item.get("keywords"))) + list(names(item.get("articleSection")))},
                                   where)
    return Metadata()


def walk(data: object) -> Iterable[dict]:
    """Every object in a JSON-LD document (lists and @graph included), outermost first."""
    if isinstance(data, dict):
        yield data
        for value in data.values():
            if isinstance(value, (dict, list)):
                yield from walk(value)
    elif isinstance(data, list):
        for item in data:
            yield from walk(item)


FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
KEY_VALUE = re.compile(r"^([A-Za-z][A-Za-z_:-]*)[ \t]*:[ \t]*(.*?)[ \t]*$")


def front_matter(text: str, where: str) -> tuple[dict[str, object], int]:
    """Markdown front matter (simple YAML: `key: value`, `key: [a, b]`, `- item` lists): the values
    and where the article's own text begins (0: none)."""
    match = FRONT_MATTER.match(text)
    if not match:
        return {}, 0
    values: dict[str, object] = {}
    key = None
    for line in match.group(1).split("\n"):
        item = re.match(r"^[ \t]+-[ \t]*(.+?)[ \t]*$", line) or re.match(r"^-[ \t]+(.+?)[ \t]*$", line)
        pair = KEY_VALUE.match(line)
        if item and key is not None:
            current = values.get(key)
            values[key] = (current if isinstance(current, list) else []) + [unquote(item.group(1))]
        elif pair:
            key, raw = pair.group(1).lower(), pair.group(2)
            if raw.startswith("[") and raw.endswith("]"):
                values[key] = [unquote(part) for part in raw[1:-1].split(",") if part.strip()]
            else:
                values[key] = unquote(raw) if raw else []
    return values, match.end()


def unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def header_lines(text: str) -> tuple[dict[str, object], int]:
    """Plain text's optional `Key: value` lines at the very top, before the headline (only keys
    that name a metadata field): the values and where the rest begins (0: none)."""
    values: dict[str, object] = {}
    position = 0
    for line in text.split("\n"):
        pair = KEY_VALUE.match(line)
        if not pair or pair.group(1).lower() not in FIELD_OF or not pair.group(2):
            break
        key, value = pair.group(1).lower(), pair.group(2)
        values[key] = [*values[key], value] if isinstance(values.get(key), list) else \
            [values[key], value] if key in values else value  # one line: split at commas, like meta tags
        position += len(line) + 1
    return values, min(position, len(text))


NO_DATE = -(2**63)  # an article without a publication time, in epoch-second (int64) arrays


def epoch(value: str) -> int:
    """Epoch seconds of a stored ISO 8601 UTC time."""
    return int(datetime.fromisoformat(value).timestamp())


def time_bound(value: str, upper: bool) -> int:
    """Epoch seconds of a filter bound: an ISO date-time (a time without a zone is UTC), or a date
    alone, which as an upper bound takes in that whole day. Raises ValueError."""
    text = value.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp())
    start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc).timestamp()
    return int(start) + (86_400 if upper else 0)


@dataclass(frozen=True)
class Filters:
    """What a search may return: each given field narrows (values of one field are alternatives).

    published_after is inclusive, published_before exclusive (epoch seconds, see time_bound);
    with either, articles without a publication time are left out. Outlets, authors, languages and
    tags match without regard to case; a language also matches its regional variants (en: en-GB).
    """

    doc_ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    published_after: int | None = None
    published_before: int | None = None
    outlets: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) not in (None, ()) for f in fields(self))

    @property
    def dated(self) -> bool:
        return self.published_after is not None or self.published_before is not None

    @property
    def by_metadata(self) -> bool:
        return bool(self.outlets or self.authors or self.languages or self.tags)
