"""Who is calling: the socket peer, or the client behind trusted proxies; allow-list networks.

X-Forwarded-For, -Proto and -Host are read only when the socket peer is a trusted proxy
(`trusted_proxies`), and only from the right, the side the nearest proxy wrote.
Unknown means unknown: callers fail closed.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence

from aiohttp import web

from gateway.errors import ConfigError, Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...], setting: str = "allow") -> tuple[IPNetwork, ...]:
    """Parse CIDRs (a bare address is a /32 or /128); ConfigError names the bad entry."""
    out = []
    for i, cidr in enumerate(cidrs):
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                Problem("", f"{setting}/{i}", f"{cidr!r} is not an IP network", "write 10.0.0.0/8")
            ) from None
    return tuple(out)


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return addr


def within(addr: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def _peer(request: web.BaseRequest) -> IPAddress | None:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return _parse_ip(str(peer[0])) if isinstance(peer, tuple) and peer else None


def client_ip(request: web.BaseRequest, trusted_proxies: Sequence[str]) -> IPAddress | None:
    """The caller's address: the socket peer, or the right-most untrusted X-Forwarded-For hop.

    X-Forwarded-For is read only when the socket peer is a trusted proxy; hops added by
    trusted proxies are skipped from the right. None when unknown (fail closed).
    """
    addr = _peer(request)
    trusted = parse_networks(tuple(trusted_proxies), "trusted_proxies")
    if addr is None or not within(addr, trusted):
        return addr
    hops = [h for line in request.headers.getall("X-Forwarded-For", ()) for h in line.split(",")]
    for hop in reversed([h for h in hops if h.strip()]):
        hop_addr = _parse_ip(hop)
        if hop_addr is None:
            return None  # a trusted proxy wrote junk: trust nothing further left
        addr = hop_addr
        if not within(addr, trusted):
            return addr
    return addr  # every hop is a trusted proxy: the left-most one is the caller


_FORWARDED_HOST = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$"
)


def _last_value(request: web.BaseRequest, name: str) -> str | None:
    values = [v.strip() for line in request.headers.getall(name, ()) for v in line.split(",")]
    values = [v for v in values if v]
    return values[-1] if values else None


def forwarded_origin(request: web.BaseRequest, trusted_proxies: Sequence[str]) -> str | None:
    """`scheme://host` from X-Forwarded-Proto / -Host, when a trusted proxy sent them.

    Read only when the socket peer is a trusted proxy, and only the right-most value of
    each header (the one the nearest proxy wrote; values to its left came from further
    away, perhaps from the client). None when the peer is not trusted, neither header is
    there, or a value is not a plain `http`/`https` or `host[:port]`.
    """
    addr = _peer(request)
    trusted = parse_networks(tuple(trusted_proxies), "trusted_proxies")
    if addr is None or not within(addr, trusted):
        return None
    proto = _last_value(request, "X-Forwarded-Proto")
    host = _last_value(request, "X-Forwarded-Host")
    if proto is None and host is None:
        return None
    scheme = (proto or request.scheme).lower()
    host = host or request.host
    if scheme not in ("http", "https") or not _FORWARDED_HOST.match(host):
        return None
    return f"{scheme}://{host}"
