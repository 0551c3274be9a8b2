"""The HTTP edge's first checks, before a byte of a request body is read or parsed.

More than SEMSEARCH_MAX_CONCURRENT_REQUESTS requests at once: 503 with Retry-After (the probes
/healthz, /readyz and /metrics are never refused). A body over SEMSEARCH_MAX_BODY_BYTES is
refused with 413: at once when its Content-Length says so, else as soon as the bytes received
pass the limit (a chunked body). A body that stops arriving for SEMSEARCH_BODY_TIMEOUT seconds
gets 408 and the connection is closed. Writes (/documents, /admin) are refused with 403 or 401
before their body is read, so a client without the key cannot make the server read anything.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.exceptions import HTTPException

from indexer.settings import Settings
from service.errors import ApiError, error_response

PROTECTED = ("/documents", "/admin/")
PROBES = ("/healthz", "/readyz", "/metrics")
# On every response. The page loads only its own script and stylesheet, so it satisfies a strict
# policy (tested in Chromium); /docs loads Swagger UI from this server but starts it with an
# inline script, so its policy allows inline script and style, nothing else.
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "worker-src blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


class BodyTooLarge(HTTPException):
    """Raised from inside the body read; an HTTPException, so FastAPI passes it on unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes (SEMSEARCH_MAX_BODY_BYTES)")


class BodyTimeout(HTTPException):
    """Raised from inside the body read when the client stops sending; the connection is closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body stopped arriving for {seconds:g} s (SEMSEARCH_BODY_TIMEOUT)",
                         headers={"Connection": "close"})


def key_problem(settings: Settings, authorization: str) -> ApiError | None:
    """Why a request with this Authorization header may not write, or None when it may."""
    if not settings.ingest_enabled:
        return ApiError(403, "disabled", "document ingest is disabled: set SEMSEARCH_API_KEY to enable it")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), settings.api_key.get_secret_value().encode()):
        return ApiError(401, "unauthorized", "missing or wrong API key: send Authorization: Bearer <key>",
                        headers={"WWW-Authenticate": "Bearer"})
    return None


class RequestGuard:
    """Plain ASGI middleware: security headers on every response; the request cap, body size,
    body timeout and write authorization, checked before the app reads anything."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.in_flight = 0  # requests being answered (one event loop: no lock needed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = (DOCS_CSP if scope["path"] == "/docs" else CSP).encode()

        async def send_secured(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS,
                                      (b"content-security-policy", policy)]
            await send(message)

        await self.guarded(scope, receive, send_secured)

    async def guarded(self, scope, receive, send) -> None:
        if scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.settings.max_concurrent_requests:
            await self.refuse(send, 503, "busy", f"more than {self.settings.max_concurrent_requests} requests at "
                              "once (SEMSEARCH_MAX_CONCURRENT_REQUESTS); retry in a moment", {"Retry-After": "1"})
            return
        self.in_flight += 1
        try:
            await self.checked(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def checked(self, scope, receive, send) -> None:
        headers = {name.lower(): value for name, value in scope["headers"]}
        limit = self.settings.max_body_bytes
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            await self.refuse(send, 413, "body_too_large", f"request body over {limit} bytes "
                              "(SEMSEARCH_MAX_BODY_BYTES)")
            return
        if scope["path"].startswith(PROTECTED) and scope["method"] != "GET":
            problem = key_problem(self.settings, headers.get(b"authorization", b"").decode("latin-1"))
            if problem is not None:
                await self.refuse(send, problem.status, problem.code, problem.message, problem.headers)
                return
        received, timeout, complete = 0, self.settings.body_timeout, False

        async def counted() -> dict:
            nonlocal received, complete
            if complete:  # later reads wait for a disconnect, which may rightly take long
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                raise BodyTimeout(timeout) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def refuse(send, status: int, code: str, message: str, headers: dict | None = None) -> None:
        response = error_response(status, code, message, headers=headers)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*response.raw_headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": response.body})
