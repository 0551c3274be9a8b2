"""uvicorn's HTTP protocol with a deadline for each request's head (its line and headers).

uvicorn arms no timer before a connection's first request, and a request that sends part of its
headers cancels the keep-alive timer: a client that connects and then sends nothing, or half a
request line, held its connection (and a file descriptor) forever. Here a connection must
complete each request head within SEMSEARCH_HEADER_TIMEOUT seconds of connecting or of its
previous response, else it is closed. The body has its own timeout (service/guard.py).

It also answers what never reaches the app in the API's JSON error shape, with the security
headers, instead of uvicorn's plain text: a URL over MAX_URL_BYTES (414, before the parser's own
limit of about 64 KB) and a request that is not HTTP (400).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from indexer.settings import current
from service.guard import CSP, SECURITY_HEADERS

MAX_URL_BYTES = 32_768
log = logging.getLogger("semsearch.http")


class UrlTooLong(Exception):
    """Raised from the parser's URL callback; the parser stops and reports an error."""


def header_timeout() -> float:
    return current().header_timeout


class HeadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request head does not arrive in time."""

    head_timer = None
    url_too_long = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self.url_too_long = True
            raise UrlTooLong

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when the parser gives up; the connection is closed after it."""
        if self.url_too_long:
            self.send_error(414, "url_too_long", f"the URL is over {MAX_URL_BYTES} bytes; send a long "
                            "search as POST /search with a JSON body")
        else:
            self.send_error(400, "bad_request", "malformed HTTP request")

    def send_error(self, status: int, code: str, message: str) -> None:
        log.warning("refused before routing: %d %s", status, message)
        body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
        headers = [*self.server_state.default_headers, *SECURITY_HEADERS, (b"content-security-policy", CSP.encode()),
                   (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
        self.transport.write(head + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body)
        self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.arm_head_timer()

    def on_headers_complete(self) -> None:
        self.cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        waiting = bool(self.pipeline)  # a pipelined request's head has already arrived
        super().on_response_complete()
        if not waiting and not self.transport.is_closing():
            self.arm_head_timer()

    def connection_lost(self, exc) -> None:
        self.cancel_head_timer()
        super().connection_lost(exc)

    def arm_head_timer(self) -> None:
        self.cancel_head_timer()
        self.head_timer = self.loop.call_later(header_timeout(), self.head_too_slow)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_too_slow(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
