"""Where the feed follower may fetch from: the one place that decides, asked twice for every
request (the URL's origin before it is sent, the address a name resolves to as the connection is
made, so a name that changes its answer between the two, DNS rebinding, is still caught).

Origins the operator named are trusted as given, whatever their address: each feed's own (scheme,
host and port as written) and every exact `host` or `host:port` in SEMSEARCH_FEED_HOSTS. A pattern
there (`*.example.org`, or `*` for any host, for aggregator feeds that link to other sites) admits
more hosts, but only at public addresses: loopback, private, link-local, multicast, unspecified,
reserved and shared addresses are refused in every spelling (IPv4, IPv6, IPv4-mapped, 6to4, NAT64,
numeric forms like 2130706433 or 0x7f.1). Any other origin is refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
NUMERIC_V4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[..., list]  # socket.getaddrinfo's shape


class Refused(Exception):
    """A request the fetch policy does not allow (named in the log, counted apart from failures)."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # canonical: lower case, IDNA, IP literals in their one standard spelling
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}")


def canonical_host(host: str) -> str:
    """One spelling per host: `2130706433`, `0x7f.1` and `127.0.0.1` are the same address."""
    host = host.strip().rstrip(".").lower()
    if not host:
        raise ValueError("no host")
    try:
        return ipaddress.ip_address(host.split("%")[0]).compressed
    except ValueError:
        pass
    if NUMERIC_V4.match(host):  # the forms inet_aton (and browsers) read as IPv4
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise ValueError(f"{host!r} is not an address") from None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{host!r} is not a host name") from None


def origin_of(url: str) -> Origin:
    """The origin of an http(s) URL; ValueError for anything else."""
    parts = urlsplit(url)  # ValueError for a broken IPv6 literal such as http://[zz
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url}: only http and https addresses are fetched")
    if parts.hostname is None:
        raise ValueError(f"{url}: no host")
    port = parts.port  # ValueError for a port out of range
    return Origin(scheme, canonical_host(parts.hostname), port if port is not None else DEFAULT_PORTS[scheme])


def address_refusal(address: str) -> str | None:
    """Why a connection to this IP address is refused for an origin nobody named, or None (public)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:  # an IPv4 address carried inside an IPv6 one reaches that IPv4 host: judge it
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        ip = embedded or ip
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class Permit:
    """What the policy allowed for one request: the origin, and whether it may be at any address."""

    origin: Origin
    any_address: bool


@dataclass(frozen=True)
class FetchPolicy:
    """The operator's list (SEMSEARCH_FEED_HOSTS): exact hosts (with or without a port) and patterns."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()  # (host, port); None: the scheme's default port
    patterns: tuple[str, ...] = ()  # "" for `*` (any host), else a domain whose subdomains are admitted

    @classmethod
    def parse(cls, listed: str) -> "FetchPolicy":
        """From SEMSEARCH_FEED_HOSTS: comma-separated `host`, `host:port`, `[v6]:port`, `*.domain` or `*`."""
        hosts, patterns = set(), []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry:
                continue
            if entry == "*" or entry.startswith("*."):
                patterns.append(canonical_host(entry[2:]) if entry != "*" else "")
                continue
            try:
                parts = urlsplit(f"http://{entry}")
                if parts.hostname is None or parts.path or parts.query or parts.username:
                    raise ValueError(entry)
                hosts.add((canonical_host(parts.hostname), parts.port))
            except ValueError:
                raise ValueError(f"SEMSEARCH_FEED_HOSTS: {entry!r} is not host, host:port, *.domain or *") from None
        return cls(frozenset(hosts), tuple(patterns))

    def permit(self, url: str, feed: Origin) -> Permit:
        """May url be fetched for the feed at `feed`? Refused (or ValueError for a broken URL) if not."""
        origin = origin_of(url)
        if origin == feed or (origin.host, origin.port) in self.hosts or (
                origin.port == DEFAULT_PORTS[origin.scheme] and (origin.host, None) in self.hosts):
            return Permit(origin, any_address=True)
        if any(p == "" or origin.host == p or origin.host.endswith("." + p) for p in self.patterns):
            return Permit(origin, any_address=False)
        raise Refused(f"{url}: not on the feed's origin {feed} nor listed in SEMSEARCH_FEED_HOSTS")


def allowed_addresses(host: str, port: int, any_address: bool, resolver: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses host resolves to that a connection may use; Refused when none may."""
    try:
        found = resolver(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror: the name does not resolve
        raise OSError(f"{host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(entry[4][0] for entry in found))
    if any_address:
        return addresses
    allowed = [a for a in addresses if address_refusal(a) is None]
    if not allowed:
        reasons = ", ".join(f"{a} ({address_refusal(a)})" for a in addresses)
        raise Refused(f"{host} resolves to {reasons}; only public addresses are fetched for hosts not named exactly "
                      "in SEMSEARCH_FEED_HOSTS")
    return allowed
