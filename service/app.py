"""FastAPI app factory: loads the model and index once, in the lifespan, and wires the routes."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from indexer.settings import Settings, current
from service import errors, ingest, routes
from service.guard import RequestGuard
from service.metrics import Metrics, RequestMetrics
from service.runtime import Runtime, follower, merger, watch

STATIC = Path(__file__).parent / "static"
# Swagger UI as files from a package (fastapi-offline), so /docs works without internet and loads
# nothing from a third party. (No /redoc: ReDoc's bundle always fetches a logo from its CDN.)
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing heavy happens until it starts."""
    settings = settings or current()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = Runtime.start(settings)
        stop = threading.Event()
        watching = watch(app.state.runtime, stop)
        merging = merger(app.state.runtime, stop)
        following = follower(app.state.runtime, stop)
        yield
        stop.set()
        for busy in (watching, merging, following):  # a merge or a feed's change in flight publishes or gives up
            if busy.is_alive():
                busy.join(timeout=60)
        if app.state.runtime.engine is not None:
            app.state.runtime.engine.close()  # Milvus Lite: another process may open the index now

    app = FastAPI(title="semsearch", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Semantic search over news articles: ranked passages with their sources "
                              "and the sentence that answers.")
    app.state.metrics = Metrics(lambda: getattr(app.state, "runtime", None))
    app.state.feeds = routes.FeedCache()
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: it counts refusals too
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(ingest.documents_router(settings))
    app.include_router(ingest.router)
    app.mount("/static/docs", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_docs(app)
    return app


def add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI served from /static/docs."""

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="semsearch API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png")
