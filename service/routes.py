"""HTTP routes: thin wrappers that validate, call the indexer's Searcher and shape the JSON."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from indexer.search import searcher as search
from service.errors import error_response, not_ready
from service.schemas import (
    TOO_LARGE,
    URL_TOO_LONG,
    ErrorResponse,
    SearchBody,
    SearchParams,
    SearchResponse,
)

router = APIRouter()
PAGE = Path(__file__).parent / "static" / "index.html"
ERRORS = {422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}


def current_searcher(request: Request) -> search.Searcher:
    runtime = request.app.state.runtime
    if runtime.searcher is None:
        raise runtime.problem
    return runtime.searcher


SearcherDep = Annotated[search.Searcher, Depends(current_searcher)]


def run_search(searcher: search.Searcher, params: SearchParams) -> JSONResponse:
    """Search and answer; the records already have SearchResponse's shape (pinned by the API
    tests), so they are sent as they are instead of being validated a second time."""
    started = time.perf_counter()
    answer = searcher.answer(search.Query(
        text=params.q, k=params.k, offset=params.offset, mode=params.mode,
        doc_ids=tuple(params.doc_id), sources=tuple(params.source),
        exact=params.exact, published_after=params.published_after, published_before=params.published_before,
        outlets=tuple(params.outlet), authors=tuple(params.author), languages=tuple(params.language),
        tags=tuple(params.tag), sort=params.sort, recency_half_life_days=params.recency_half_life_days,
        facets=tuple(dict.fromkeys(params.facets.split(","))) if params.facets else (), collapse=params.collapse,
        min_relevance=params.min_relevance, group=params.grouping()))
    took = round((time.perf_counter() - started) * 1000, 2)
    return JSONResponse(search.answer_record(params.q, answer, params.explain, took))


async def answer(request: Request, searcher: search.Searcher, params: SearchParams) -> JSONResponse:
    """Search on the event loop for a small index, in the thread pool for a large one.

    On SciFact a search is ~5 ms, mostly ONNX Runtime with its own threads: the event loop avoids
    thread hand-offs and GIL contention (4 clients: 153 vs 121 requests/s). On a large index most
    of a search is FAISS and numpy, which release the GIL, so two searches can share the cores.
    """
    settings = request.app.state.runtime.settings
    for names, most, variable in ((("doc_id", "source"), settings.max_filter_values, "SEMSEARCH_MAX_FILTER_VALUES"),
                                  (("outlet", "author", "language", "tag"), settings.max_metadata_values,
                                   "SEMSEARCH_MAX_METADATA_VALUES")):
        for name in names:
            if len(getattr(params, name)) > most:
                return error_response(422, "invalid_request", f"{name}: at most {most} values ({variable})",
                                      field=name)
    if not searcher.index.remote and searcher.index.info.passages < settings.threaded_search_passages:
        return run_search(searcher, params)  # on the event loop: no thread hand-off for a small local index
    return await run_in_threadpool(run_search, searcher, params)


@router.get("/search", response_model=SearchResponse, responses={**ERRORS, **URL_TOO_LONG},
            summary="Search (query string)")
async def search_get(request: Request, params: Annotated[SearchParams, Query()], searcher: SearcherDep) -> JSONResponse:
    return await answer(request, searcher, params)


@router.post("/search", response_model=SearchResponse, responses={**ERRORS, **TOO_LARGE}, summary="Search (JSON body)")
async def search_post(request: Request, params: SearchBody, searcher: SearcherDep) -> JSONResponse:
    return await answer(request, searcher, params)


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
