"""One error shape for every HTTP failure: {"error": {"status", "code", "message", ...}}."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from indexer.text.documents import DocumentError
from indexer.errors import program
from indexer.index.engine import IndexUnavailable
from indexer.errors import QueryError

log = logging.getLogger("semsearch.http")


class ServiceUnavailable(Exception):
    """The index or model is not loaded; carries what is wrong and the command that fixes it."""

    def __init__(self, message: str, fix: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class ApiError(Exception):
    """Any other refusal, already in the shared shape's terms."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    body = {"status": status, "code": code, "message": message}
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def without_paths(text: str | None, index_dir: Path, shown: str | None = None) -> str | None:
    """text with the index folder's path shown as its name (or as shown): HTTP answers never tell
    where the server's disk keeps things (the log does)."""
    if text is None:
        return text
    paths = {str(index_dir.resolve()), str(index_dir.absolute())}  # a relative path as given tells nothing
    for path in sorted(paths | ({str(index_dir)} if index_dir.is_absolute() else set()), key=len, reverse=True):
        text = text.replace(path, shown or index_dir.name)
    installed = shlex.join(program())  # nor where the server's semsearch is installed
    return text.replace(installed, "semsearch") if installed != "semsearch" else text


def not_ready(request: Request, problem) -> JSONResponse:
    """503 not_ready for a ServiceUnavailable or IndexUnavailable (message and fix)."""
    index_dir = Path(request.app.state.runtime.settings.index_dir)
    fix = without_paths(problem.fix, index_dir, "INDEX_DIR")
    if fix and "INDEX_DIR" in fix:
        fix += "  # INDEX_DIR: the index folder this server was started with, its --index"
    return error_response(503, "not_ready", without_paths(problem.message, index_dir), fix=fix)


def describe_field(error: dict) -> str:
    """'body.k' style path of the offending field, without FastAPI's location noise."""
    if error.get("type") == "json_invalid":
        return "body"  # its location is a character position, not a field
    loc = list(error.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]  # where it came from, not which field (a field may itself be named "query")
    return ".".join(str(part) for part in loc) or "request"


def describe_problem(error: dict) -> str:
    if error.get("type") == "json_invalid":
        position = error.get("loc", ("body", "?"))[-1]
        return f"not valid JSON ({error.get('ctx', {}).get('error', 'decode error')} at character {position})"
    if error.get("type") == "extra_forbidden":
        return "not a parameter of this request (see /docs)"
    choices = LIST_PATTERN.match(str((error.get("ctx") or {}).get("pattern", "")))
    if error.get("type") == "string_pattern_mismatch" and choices:
        return f"a comma-separated list of {', '.join(choices.group(1).split('|'))}"
    return error.get("msg", "invalid").removeprefix("Value error, ")


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
LIST_PATTERN = re.compile(r"^\^\(([\w|]+)\)\(,\(\1\)\)\*\$$")  # a comma-separated list of choices


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path (asked route by route, since
    included routers hide their routes' methods)."""
    def answered(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.routes)
    return [method for method in METHODS if answered(method)]


def install(app: FastAPI) -> None:
    """Translate every domain and framework error into the one shape."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": describe_field(e), "message": describe_problem(e)} for e in exc.errors()]
        problems.sort(key=lambda p: p["message"].startswith("not a parameter"), reverse=True)  # a misnamed one first
        first = problems[0] if problems else {"field": "request", "message": "invalid request"}
        return error_response(422, "invalid_request", f"{first['field']}: {first['message']}",
                              field=first["field"], details=problems)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc), field=exc.field)

    @app.exception_handler(ServiceUnavailable)
    @app.exception_handler(IndexUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable | IndexUnavailable) -> JSONResponse:
        return not_ready(request, exc)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(DocumentError)
    async def bad_document(request: Request, exc: DocumentError) -> JSONResponse:
        return error_response(422, "invalid_document", str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not read the body
            return error_response(422, "invalid_request", f"body: not valid JSON ({exc.__cause__})", field="body")
        if exc.status_code == 405:  # Starlette names only the first route's methods in Allow
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
        code = {404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
                413: "body_too_large"}.get(exc.status_code, "http_error")
        message = "no such endpoint; see /docs" if exc.detail == "Not Found" else str(exc.detail)
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "unexpected server error; see the service log")
