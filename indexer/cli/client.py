"""`semsearch search --url`: ask a running server instead of loading the model and the index.

Standard library only (urllib, json), so a terminal search against a server starts in a fraction
of the time a local one needs (no numpy, no model, no index to open). Results come back as the
API's JSON records and are printed exactly as a local search prints them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from indexer.errors import IndexUnavailable, QueryError

TIMEOUT = 30  # seconds: a search answers in milliseconds; this only bounds a stuck server


def no_good_match(searched: str, default: bool) -> str:
    """What a search that found no good match says, naming what it searched."""
    where = f"{searched} (the default; --index names another)" if default else searched
    return (f"no good match: nothing in {where} answers this well. Try fewer or other words, or drop a filter "
            f"(--min-relevance 0 shows the closest passages anyway)")


class ServerUnreachable(OSError):
    """No server answers at the URL given."""


def search(url: str, path: str, params: dict) -> bytes:
    """The server's answer to GET path (/search, /search.atom) for params (lists become repeated
    parameters); its errors raised as the CLI's own (QueryError for a 4xx, IndexUnavailable for a
    503 with its fix)."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, (), [], False)}, doseq=True)
    address = f"{url.rstrip('/')}{path}?{query}"
    try:
        with urllib.request.urlopen(address, timeout=TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc).get("error", {})
        except ValueError:
            error = {}
        message = error.get("message") or f"HTTP {exc.code}"
        if exc.code == 503:
            raise IndexUnavailable(f"the server at {url} is not ready: {message}",
                                   error.get("fix") or "see the server's log") from None
        raise QueryError(f"the server at {url} refused the search: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnreachable(f"no semsearch server answers at {url} ({reason}); start one with `semsearch "
                                "serve`, or search the index folder directly without --url") from None


def format_record(record: dict, color: bool, further: bool = False) -> str:
    """One result (the API's JSON record) as terminal text: a header line, then the passage with its
    answer marked; further: another passage of the article above, indented under it."""
    published = (record.get("published_at") or "")[:10]  # the date is enough in a terminal
    where = " · ".join(str(part) for part in (record["title"], record["section"], f"¶{record['paragraph']}",
                                              record.get("outlet"), published) if part)
    text, start = record["text"], record["start"]
    before = text[:record["highlight_start"] - start]
    after = text[record["highlight_end"] - start:]
    marked = f"\033[1;33m{record['highlight']}\033[0m" if color else f"»{record['highlight']}«"
    body = " ".join((before + marked + after).split())
    grade = {"strong": "", "weak": " weak match"}.get(record.get("match"), " no match")
    if further:  # the headline and source were given with the article's first passage
        where = " · ".join(str(part) for part in (record["section"], f"¶{record['paragraph']}") if part)
        return f"   + [{record['relevance']:.2f}{grade}] {where} [{start}:{record['end']}]\n     {body}\n"
    copies = record.get("also_in") or ()  # collapse=story: where else the same story ran
    outlets = list(dict.fromkeys(c.get("outlet") or c.get("source") for c in copies))
    also = (f"   also in {len(outlets)} {'outlet' if len(outlets) == 1 else 'outlets'}: {', '.join(outlets)}\n"
            if outlets else "")
    return (f"{record['rank']}. [{record['relevance']:.2f}{grade}] {where}\n   {record['source']} [{start}:{record['end']}]\n"
            f"   {body}\n{also}")


def print_answer(answer: dict, as_json: bool, color: bool, searched: str, default: bool) -> None:
    """Print a search answer ({"query", "results", "no_good_match", "facets"?}) as JSON (with the
    index searched: its folder or the server) or as terminal text; default: the index was not named."""
    if as_json:
        print(json.dumps({**{key: answer[key] for key in ("query", "results", "no_good_match", "facets")
                             if answer.get(key) is not None}, "index": searched}, indent=2, ensure_ascii=False))
        return
    for name, counts in (answer.get("facets") or {}).items():
        print(f"{name}: " + (", ".join(f"{c['value']} ({c['count']})" for c in counts) or "-"))
    if not answer["results"]:
        print(no_good_match(searched, default) if answer.get("no_good_match") else "no results on this page")
    elif all(r.get("match") == "weak" for r in answer["results"]):
        print("no strong match: these results are only loosely related\n")
    for record in answer["results"]:
        print(format_record(record, color))
        for other in record.get("more") or ():  # group=article: the article's further passages
            print(format_record(other, color, further=True))
