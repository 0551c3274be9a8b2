"""HTTP routes: thin wrappers that validate, call the indexer's Searcher and shape the JSON."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote
from typing import Annotated, Callable, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from indexer.search import atom
from indexer.search import searcher as search
from service.errors import error_response, not_ready
from service.schemas import (
    TOO_LARGE,
    URL_TOO_LONG,
    ErrorResponse,
    FeedParams,
    SearchBody,
    SearchParams,
    SearchResponse,
)

router = APIRouter()
T = TypeVar("T")
PAGE = Path(__file__).parent / "static" / "index.html"
ERRORS = {422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}


def current_searcher(request: Request) -> search.Searcher:
    runtime = request.app.state.runtime
    if runtime.searcher is None:
        raise runtime.problem
    return runtime.searcher


SearcherDep = Annotated[search.Searcher, Depends(current_searcher)]


def query_of(params: SearchParams) -> search.Query:
    return search.Query(
        text=params.q, k=params.k, offset=params.offset, mode=params.mode,
        doc_ids=tuple(params.doc_id), sources=tuple(params.source),
        exact=params.exact, published_after=params.published_after, published_before=params.published_before,
        outlets=tuple(params.outlet), authors=tuple(params.author), languages=tuple(params.language),
        tags=tuple(params.tag), sort=params.sort, recency_half_life_days=params.recency_half_life_days,
        facets=tuple(dict.fromkeys(params.facets.split(","))) if params.facets else (), collapse=params.collapse,
        min_relevance=params.min_relevance, group=params.grouping())


def run_search(searcher: search.Searcher, params: SearchParams) -> JSONResponse:
    """Search and answer; the records already have SearchResponse's shape (pinned by the API
    tests), so they are sent as they are instead of being validated a second time."""
    started = time.perf_counter()
    answer = searcher.answer(query_of(params))
    took = round((time.perf_counter() - started) * 1000, 2)
    return JSONResponse(search.answer_record(params.q, answer, params.explain, took))


def refusal(request: Request, params: SearchParams) -> JSONResponse | None:
    """The 422 for a filter with more values than the service takes, if any."""
    settings = request.app.state.runtime.settings
    for names, most, variable in ((("doc_id", "source"), settings.max_filter_values, "SEMSEARCH_MAX_FILTER_VALUES"),
                                  (("outlet", "author", "language", "tag"), settings.max_metadata_values,
                                   "SEMSEARCH_MAX_METADATA_VALUES")):
        for name in names:
            if len(getattr(params, name)) > most:
                return error_response(422, "invalid_request", f"{name}: at most {most} values ({variable})",
                                      field=name)
    return None


async def in_turn(request: Request, searcher: search.Searcher, work: Callable[[], T]) -> T:
    """Search on the event loop for a small index, in the thread pool for a large one.

    On SciFact a search is ~5 ms, mostly ONNX Runtime with its own threads: the event loop avoids
    thread hand-offs and GIL contention (4 clients: 153 vs 121 requests/s). On a large index most
    of a search is FAISS and numpy, which release the GIL, so two searches can share the cores.
    """
    settings = request.app.state.runtime.settings
    if not searcher.index.remote and searcher.index.info.passages < settings.threaded_search_passages:
        return work()  # on the event loop: no thread hand-off for a small local index
    return await run_in_threadpool(work)


async def answer(request: Request, searcher: search.Searcher, params: SearchParams) -> JSONResponse:
    return refusal(request, params) or await in_turn(request, searcher, lambda: run_search(searcher, params))


@router.get("/search", response_model=SearchResponse, responses={**ERRORS, **URL_TOO_LONG},
            summary="Search (query string)")
async def search_get(request: Request, params: Annotated[SearchParams, Query()], searcher: SearcherDep) -> JSONResponse:
    return await answer(request, searcher, params)


@router.post("/search", response_model=SearchResponse, responses={**ERRORS, **TOO_LARGE}, summary="Search (JSON body)")
async def search_post(request: Request, params: SearchBody, searcher: SearcherDep) -> JSONResponse:
    return await answer(request, searcher, params)


@router.get("/search.atom", response_class=Response, summary="A search as an Atom feed: the newest articles that answer it",
            responses={200: {"content": {"application/atom+xml": {}}, "description": "an Atom 1.0 feed"},
                       304: {"description": "the feed has not changed since the ETag or the time given"},
                       **ERRORS, **URL_TOO_LONG})
async def search_atom(request: Request, params: Annotated[FeedParams, Query()], searcher: SearcherDep) -> Response:
    """One entry per article, newest first, only articles at or above the relevance floor
    (min_relevance), at most k (50). Send If-None-Match (the ETag) or If-Modified-Since to get a
    304 while nothing changed."""
    refused = refusal(request, params)
    if refused is not None:
        return refused
    address, feeds = str(request.url), request.app.state.feeds
    feed = feeds.get(searcher, address)
    if feed is None:
        query = atom.feed_query(query_of(params))
        feed = await in_turn(request, searcher, lambda: atom.search_feed(
            query, searcher.answer(query), searcher.index.info.built_at, self_url=address,
            page_url=str(request.url.replace(path="/")),
            document_url=lambda doc_id: f"{request.base_url}documents/{quote(doc_id, safe='')}"))
        feeds.put(searcher, address, feed)
    modified = parsed_time(searcher.index.info.built_at)
    headers = {"ETag": feed.etag, **({"Last-Modified": format_datetime(modified, usegmt=True)} if modified else {})}
    if not_modified(request, feed.etag, modified):
        return Response(status_code=304, headers=headers)
    return Response(feed.body, media_type=atom.CONTENT_TYPE, headers=headers)


class FeedCache:
    """The feeds written for the searcher in use, by address: feed readers ask for the same
    address again and again, and its answer changes only when the index (or the relevance
    calibration) does, which brings a new searcher. At most `size` feeds, the least recently
    asked for dropped first."""

    def __init__(self, size: int = 256) -> None:
        self.size, self.entries, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, searcher: search.Searcher, address: str) -> atom.Feed | None:
        with self.lock:
            found = self.entries.get(address)
            if found is None or found[0] is not searcher:
                return None
            self.entries.move_to_end(address)
            return found[1]

    def put(self, searcher: search.Searcher, address: str, feed: atom.Feed) -> None:
        with self.lock:
            self.entries[address] = (searcher, feed)
            self.entries.move_to_end(address)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


def parsed_time(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp).astimezone(timezone.utc) if stamp else None
    except ValueError:
        return None


def not_modified(request: Request, etag: str, modified: datetime | None) -> bool:
    """Whether the client's copy is current (RFC 9110 13.1: If-None-Match, when given, decides)."""
    tags = request.headers.get("if-none-match")
    if tags is not None:
        return tags.strip() == "*" or etag in (tag.strip().removeprefix("W/") for tag in tags.split(","))
    since = request.headers.get("if-modified-since")
    if not since or modified is None:
        return False
    try:
        given = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return modified <= (given if given.tzinfo else given.replace(tzinfo=timezone.utc))


@router.get("/opensearch.xml", include_in_schema=False)
async def opensearch(request: Request) -> Response:
    """OpenSearch 1.1: browsers add the search box, feed readers find the feed of a search."""
    return Response(atom.opensearch_description(str(request.base_url)), media_type=atom.OPENSEARCH_TYPE)


# Cheap probes are `async def` too: they answer on the event loop without a thread hand-off.
@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}}, summary="The index is loaded")
async def readyz(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    if runtime.searcher is None or runtime.outage is not None:
        return not_ready(request, runtime.outage or runtime.problem)
    index = runtime.searcher.index
    return JSONResponse({"status": "ready", **index.info.record(), "arithmetic": runtime.arithmetic,
                         "relevance": runtime.relevance_state(),
                         **({"feeds": runtime.feeds} if runtime.feeds is not None else {})})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route, and the index being served."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
