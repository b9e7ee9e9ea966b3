"""mTLS per request: the client certificate's names, and connections to close after a reload.

A listener's handshakes decide whether a client certificate is asked for and verified
(`gateway.tls`); these checks run per request, against the names a listener or an
integration accepts, and close a connection accepted before mTLS was switched on once
its response is sent.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any, Literal

from aiohttp import web

from gateway.clock import system_clock
from gateway.errors import Forbidden


def _name_matches(value: str, pattern: str) -> bool:
    value, pattern = value.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = value.partition(".")
        return bool(head) and rest == pattern[2:]
    return value == pattern


def peer_names(request: web.BaseRequest) -> list[str]:
    """The verified client certificate's CN and DNS/URI SANs ([] when none was verified)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    # The dict form is empty unless OpenSSL verified the certificate: fail closed.
    cert: Any = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "URI")]
    return names


def check_peer(request: web.BaseRequest, allowed: Sequence[str]) -> None:
    """Raise Forbidden unless the client certificate's CN or a DNS/URI SAN is allowed."""
    if not allowed:
        return
    names = peer_names(request)
    if not any(_name_matches(name, pattern) for name in names for pattern in allowed):
        raise Forbidden("client certificate not accepted", code="client_certificate_rejected")


PeerState = Literal["verified", "missing", "not_asked"]
_CLOSE_AFTER = web.RequestKey("tls_close_after", bool)


def client_certificate_state(request: web.BaseRequest) -> PeerState:
    """Whether the connection has a verified client certificate.

    "not_asked": the connection was accepted before the listener asked for certificates
    (mTLS switched on by a reload since); "missing": asked, or no TLS, and none verified.
    """
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return "missing"
    if ssl_object.getpeercert():  # empty unless OpenSSL verified it
        return "verified"
    return "missing" if getattr(ssl_object, "asks_for_certificate", True) else "not_asked"


def require_peer(request: web.BaseRequest, allowed: Sequence[str]) -> None:
    """Raise Forbidden unless a verified, unexpired client certificate with an allowed name.

    A connection accepted before the listener asked for certificates (mTLS switched on
    by a reload) is let through this once and closed after its response, so clients
    reconnect under the new rules without a failed request.
    """
    state = client_certificate_state(request)
    if state == "not_asked":
        close_after_response(request)
        return
    if state == "missing":
        raise Forbidden("a client certificate is required", code="client_certificate_required")
    check_peer(request, allowed)
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    if cert and ssl.cert_time_to_seconds(cert["notAfter"]) < system_clock():
        # expired since the handshake of this (long) keep-alive connection
        close_after_response(request)
        raise Forbidden("the client certificate has expired", code="client_certificate_expired")


def close_after_response(request: web.BaseRequest) -> None:
    """Close the connection once the current response is sent."""
    request[_CLOSE_AFTER] = True
    request.protocol.close()


def keep_open(request: web.BaseRequest) -> None:
    """Start a request with its connection kept open (`close_after_response` changes it).

    `gateway.edge.Edge.admit` calls it for every request, so that `wants_close` finds
    the key set and `request.get` raises no KeyError inside.
    """
    request[_CLOSE_AFTER] = False


def wants_close(request: web.BaseRequest) -> bool:
    """Whether `close_after_response` was called for this request."""
    return bool(request.get(_CLOSE_AFTER, False))
