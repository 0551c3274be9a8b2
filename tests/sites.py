"""Local web sites for the feed tests: a real HTTP server on 127.0.0.1 serving what a test gives
it, answering conditional requests, and recording every request it saw."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class QuietServer(ThreadingHTTPServer):
    """A test site: a client that hangs up mid-answer (the fetcher cutting a slow or oversized
    page, as it should) is no error worth a traceback in the test output; anything else is."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Site:
    """path -> (status, content type, body) or a function answering the request itself."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes] | Callable] = {}
        self.seen: list[tuple[str, bool]] = []  # (path, whether it was a conditional request)
        self.hosts: list[str] = []  # the Host header of each request
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (the standard library's name)
                site.seen.append((self.path, "If-None-Match" in self.headers))
                site.hosts.append(self.headers.get("Host", ""))
                route = site.routes.get(self.path, (404, "text/plain", b"not found"))
                if callable(route):
                    route(self)
                    return
                status, kind, body = route
                if status in (301, 302, 307, 308):  # body: where to
                    self.send_response(status)
                    self.send_header("Location", body.decode())
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if status == 200 and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, path: str, body: str | bytes | Callable, kind: str = "text/html; charset=utf-8",
              status: int = 200) -> None:
        self.routes[path] = body if callable(body) else (status, kind, body.encode() if isinstance(body, str) else body)

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def slow(seconds: float) -> Callable:
    """A page that answers after a pause."""

    def answer(handler) -> None:
        time.sleep(seconds)
        body = b"<html><body><p>Late.</p></body></html>"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def dripping(every: float, in_headers: bool = False) -> Callable:
    """A response that never ends: one byte every `every` seconds (of the headers, or of the body)."""

    def answer(handler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"  # until it closes
        try:
            if in_headers:
                for byte in head:
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    time.sleep(every)
            handler.wfile.write(head)
            handler.wfile.flush()
            while True:
                handler.wfile.write(b"<")
                handler.wfile.flush()
                time.sleep(every)
        except OSError:  # the client hung up: what it should do
            handler.close_connection = True
    return answer


def encoded(body: bytes, content_encoding: str, kind: str = "text/html") -> Callable:
    """A response with this (already encoded) body and Content-Encoding header."""

    def answer(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Encoding", content_encoding)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            handler.wfile.write(body)
        except OSError:  # the client stopped reading at its cap
            handler.close_connection = True
    return answer
