"""uvicorn's HTTP protocol with a deadline for each request's head (its line and headers).

uvicorn arms no timer before a connection's first request, and a request that sends part of its
headers cancels the keep-alive timer: a client that connects and then sends nothing, or half a
request line, held its connection (and a file descriptor) forever. Here a connection must
complete each request head within SEMSEARCH_HEADER_TIMEOUT seconds of connecting or of its
previous response, else it is closed. The body has its own timeout (service/guard.py).
"""

from __future__ import annotations

import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_VARIABLE = "SEMSEARCH_HEADER_TIMEOUT"


def header_timeout() -> float:
    return float(os.environ.get(HEADER_TIMEOUT_VARIABLE, "10"))


class HeadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request head does not arrive in time."""

    head_timer = None

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
