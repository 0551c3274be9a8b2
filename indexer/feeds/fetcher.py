"""The feed follower's one way out to the network: GETs bounded in reach, size and time.

Reach: every hop (the first request and each redirect) is asked of the FetchPolicy before it is
sent, and the connection itself goes only to an address the policy allows for it (the name is
resolved here and the checked address is the one connected to). Size: at most one Content-Encoding
layer (gzip or deflate), decoded with a cap, and the cap counts the bytes as they arrive, raw and
decoded, so a small compressed bomb stops at the cap instead of filling memory. Time: one deadline
for the whole request (name resolution, connect, headers, body and redirects together); a watchdog
shuts the socket at the deadline, so a server that drips one byte a second cannot hold a poll (or
the service's shutdown) longer than that. httpcore does the HTTP; this module owns the sockets it uses.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpcore

from indexer.settings import Settings
from indexer.feeds.fetch_policy import FetchPolicy, Origin, Permit, Refused, Resolver, allowed_addresses, canonical_host

REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """One request that did not give a usable answer (named in the log, retried next poll)."""


@dataclass(frozen=True)
class FeedLimits:
    """What one poll may fetch (defaults: the settings table's)."""

    timeout_s: float = Settings.feed_timeout  # the whole request: connect, headers, body and redirects
    max_bytes: int = Settings.feed_max_bytes  # of a response body, counted raw and decoded
    max_redirects: int = 5
    host_delay_s: float = Settings.feed_host_delay  # between two requests to one host
    max_document_chars: int = Settings.max_document_chars  # the longest article text kept
    policy: FetchPolicy = FetchPolicy()

    @classmethod
    def of(cls, settings: Settings) -> "FeedLimits":
        """The limits settings give (SEMSEARCH_FEED_HOSTS, _FEED_TIMEOUT, _FEED_MAX_BYTES, _FEED_HOST_DELAY,
        _MAX_DOCUMENT_CHARS); ValueError names a bad host list."""
        return cls(timeout_s=settings.feed_timeout, max_bytes=settings.feed_max_bytes,
                   host_delay_s=settings.feed_host_delay, max_document_chars=settings.max_document_chars,
                   policy=FetchPolicy.parse(settings.feed_hosts))


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # decoded; empty unless the status is 200
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    url: str  # after redirects


class GuardedBackend(httpcore.NetworkBackend):
    """The sockets of one request: connected only to addresses the policy allows, shut at the deadline."""

    def __init__(self, permit: Permit, deadline: float, resolver: Resolver) -> None:
        self.permit, self.any_address, self.deadline, self.resolver = permit, permit.any_address, deadline, resolver
        self.inner = httpcore.SyncBackend()
        self.sockets: list[socket.socket] = []
        self.expired = False
        self.lock = threading.Lock()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if (canonical_host(str(host)), int(port)) != (self.permit.origin.host, self.permit.origin.port):
            # httpcore read the URL otherwise than the policy did: never connect where it did not look
            raise Refused(f"{host}:{port} is not {self.permit.origin}, which the fetch policy allowed")
        addresses = self.resolve(host, port)
        failure: Exception | None = None
        for address in addresses:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("no time left to connect")
            try:
                stream = self.inner.connect_tcp(address, port, min(timeout or left, left), local_address,
                                                socket_options)
            except httpcore.ConnectError as exc:  # the next address may answer
                failure = exc
                continue
            with self.lock:
                self.sockets.append(stream.get_extra_info("socket"))
                if self.expired:
                    self.shut()
            return stream
        raise failure or httpcore.ConnectError(f"{host}: no address to connect to")

    def resolve(self, host: str, port: int) -> list[str]:
        """The allowed addresses of host, within the deadline: a resolver that hangs is left behind
        in its own thread (getaddrinfo cannot be interrupted), the request fails on time."""
        answer: dict = {}

        def lookup() -> None:
            try:
                answer["addresses"] = allowed_addresses(host, port, self.any_address, self.resolver)
            except Exception as exc:  # handed to the request below
                answer["error"] = exc

        worker = threading.Thread(target=lookup, name="feed-resolver", daemon=True)
        worker.start()
        worker.join(max(self.deadline - time.monotonic(), 0))
        if "error" in answer:
            raise answer["error"]
        if "addresses" not in answer:
            self.expired = True
            raise httpcore.ConnectTimeout(f"{host} did not resolve in time")
        return answer["addresses"]

    def expire(self) -> None:
        """The deadline: whatever is reading or writing on these sockets fails now."""
        with self.lock:
            self.expired = True
            self.shut()

    def shut(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass


class Fetcher:
    """GETs for the feeds' follower, each within the limits and the policy (see the module docstring)."""

    def __init__(self, limits: FeedLimits, stop: threading.Event | None = None,
                 resolver: Resolver = socket.getaddrinfo) -> None:
        self.limits, self.stop, self.resolver = limits, stop or threading.Event(), resolver
        self.ssl_context = ssl.create_default_context()
        self.last_request: dict[Origin, float] = {}

    def get(self, url: str, feed: Origin, validators: dict | None = None) -> Response:
        """The response to GET url for the feed at `feed`, following allowed redirects; a 304 has no
        body. Refused when the policy forbids a hop; FetchError for every other failure."""
        deadline = time.monotonic() + self.limits.timeout_s
        headers = [(b"User-Agent", b"semsearch-follow/1"), (b"Accept-Encoding", b"gzip, deflate")]
        if validators and validators.get("etag"):
            headers.append((b"If-None-Match", validators["etag"].encode("latin-1", "replace")))
        if validators and validators.get("last_modified"):
            headers.append((b"If-Modified-Since", validators["last_modified"].encode("latin-1", "replace")))
        for _ in range(self.limits.max_redirects + 1):
            try:
                permit = self.limits.policy.permit(url, feed)
            except ValueError as exc:
                raise FetchError(str(exc) if str(exc).startswith(url) else f"{url}: {exc}") from None
            self.pause(permit.origin)
            status, location, response = self.hop(url, permit, headers, deadline)
            if status not in REDIRECTS or location is None:
                return response
            url = urljoin(url, location)
        raise FetchError(f"{url}: more than {self.limits.max_redirects} redirects")

    def hop(self, url: str, permit: Permit, headers: list, deadline: float):
        """One request on its own connection, with a watchdog at the deadline."""
        backend = GuardedBackend(permit, deadline, self.resolver)
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0), backend.expire)
        watchdog.daemon = True
        watchdog.start()
        seconds = self.limits.timeout_s
        try:
            with httpcore.ConnectionPool(ssl_context=self.ssl_context, network_backend=backend, retries=0) as pool, \
                    pool.stream("GET", wire_url(url), headers=headers,
                                extensions={"timeout": {"connect": seconds, "read": seconds, "write": seconds,
                                                        "pool": seconds}}) as answer:
                received = joined_headers(answer.headers)
                body = b""
                if answer.status == 200:
                    body = bounded_body(answer.iter_stream(), received, self.limits.max_bytes, url)
                if backend.expired:  # a body read until the connection closes ends at the deadline too
                    raise httpcore.ReadTimeout("deadline")
                response = Response(answer.status, body, received, url)
                return answer.status, received.get("location"), response
        except Refused:
            raise
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol, OSError, UnicodeError) as exc:
            if backend.expired or isinstance(exc, httpcore.TimeoutException):  # the watchdog, or a read timing
                # out just before it (each read may wait as long as the whole request)
                raise FetchError(f"{url}: no whole answer within {seconds:g} s (SEMSEARCH_FEED_TIMEOUT)") from None
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()
            self.last_request[permit.origin] = time.monotonic()

    def pause(self, origin: Origin) -> None:
        """Wait out the delay between two requests to one host (or until stopped)."""
        wait = self.last_request.get(origin, -1e9) + self.limits.host_delay_s - time.monotonic()
        if wait > 0:
            self.stop.wait(wait)


def wire_url(url: str) -> str:
    """The URL as sent: an international host in IDNA, other characters outside ASCII percent-encoded."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    host = parts.hostname.encode("idna").decode("ascii")
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, quote(parts.path, safe="/%:@!$&'()*+,;="),
                       quote(parts.query, safe="=&%/:?@!$'()*+,;"), ""))


def joined_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def bounded_body(chunks, headers: dict[str, str], max_bytes: int, url: str) -> bytes:
    """The body decoded from at most one Content-Encoding, never more than max_bytes raw or decoded:
    the cap is enforced while decoding, so nothing past it is ever inflated."""
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"{url}: larger than {max_bytes} bytes (SEMSEARCH_FEED_MAX_BYTES)")
    decoder = decoder_for(headers.get("content-encoding", ""), url)
    body, raw = bytearray(), 0
    try:
        for chunk in chunks:
            raw += len(chunk)
            if raw > max_bytes:
                raise FetchError(f"{url}: larger than {max_bytes} bytes (SEMSEARCH_FEED_MAX_BYTES)")
            if decoder is None:
                body += chunk
                continue
            while chunk:
                body += decoder.decompress(chunk, max_bytes + 1 - len(body))
                if len(body) > max_bytes:
                    raise FetchError(f"{url}: larger than {max_bytes} bytes once decoded (SEMSEARCH_FEED_MAX_BYTES)")
                chunk = decoder.unconsumed_tail
        if decoder is not None:
            body += decoder.flush(max_bytes + 1 - len(body))
            if len(body) > max_bytes:
                raise FetchError(f"{url}: larger than {max_bytes} bytes once decoded (SEMSEARCH_FEED_MAX_BYTES)")
    except zlib.error as exc:
        raise FetchError(f"{url}: the compressed body is damaged ({exc})") from None
    return bytes(body)


def decoder_for(content_encoding: str, url: str):
    """A zlib decoder for the one encoding allowed, None for none; FetchError for layers or others."""
    layers = [e.strip().lower() for e in content_encoding.split(",") if e.strip() and e.strip().lower() != "identity"]
    if len(layers) > 1:
        raise FetchError(f"{url}: more than one Content-Encoding ({content_encoding}); one is accepted")
    if not layers:
        return None
    if layers[0] in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if layers[0] == "deflate":
        return zlib.decompressobj()
    raise FetchError(f"{url}: Content-Encoding {layers[0]} was not asked for (gzip or deflate are)")
