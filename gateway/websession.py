"""Signed, expiring cookie values and CSRF tokens for the gateway's browser pages.

A session is a small JSON object signed with HMAC-SHA256: `v1.<payload>.<signature>`,
both base64url. It is not encrypted, so it holds ids only, never a secret. Each session
carries a random `sid`; its CSRF token is an HMAC of that sid, so forms cannot be
forged from another site without the cookie's content (which HttpOnly keeps from
scripts and SameSite keeps from cross-site requests).

Keys are derived from secrets the operator already configures (see `derive_key`), so
several gateway instances behind one load balancer accept each other's sessions and
rotating the secret ends every session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from gateway import jsonutil
from gateway.clock import Clock, system_clock
from gateway.errors import GatewayError

_PREFIX = "v1"
_MAX_COOKIE = 3800  # browsers keep 4 KiB per cookie, name and attributes included


def derive_key(purpose: str, secrets_: Iterable[str]) -> bytes:
    """Derive a signing key for one purpose from configured secrets (order-independent)."""
    material = b"\x00".join(sorted(s.encode() for s in secrets_))
    return hmac.new(material, b"byoc-gateway/" + purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Sign and verify expiring session objects with one key."""

    def __init__(self, key: bytes, ttl: float, clock: Clock = system_clock) -> None:
        self._key = key
        self._ttl = ttl
        self._clock = clock

    @property
    def ttl(self) -> float:
        """Seconds a session lasts."""
        return self._ttl

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, f"{_PREFIX}.{payload}".encode(), hashlib.sha256).digest()
        return _b64(mac)

    def issue(self, data: Mapping[str, Any]) -> str:
        """Return a cookie value holding `data`, a fresh `sid` and an expiry."""
        body = {**data, "sid": secrets.token_urlsafe(16), "exp": int(self._clock() + self._ttl)}
        payload = _b64(jsonutil.dumps(body))
        value = f"{_PREFIX}.{payload}.{self._sign(payload)}"
        if len(value) > _MAX_COOKIE:
            raise GatewayError("session data too large for a cookie")
        return value

    def verify(self, value: str | None) -> dict[str, Any] | None:
        """Return the session data when the signature holds and it has not expired."""
        if not value or len(value) > _MAX_COOKIE:
            return None
        prefix, _, rest = value.partition(".")
        payload, _, signature = rest.partition(".")
        if prefix != _PREFIX or not payload or not signature:
            return None
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            data = jsonutil.loads(_unb64(payload))
        except (binascii.Error, ValueError, GatewayError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return None
        exp = data.get("exp")
        if not isinstance(exp, int) or self._clock() >= exp:
            return None
        return data

    def csrf_token(self, session: Mapping[str, Any]) -> str:
        """Return the CSRF token of a verified session."""
        mac = hmac.new(self._key, b"csrf\x00" + str(session["sid"]).encode(), hashlib.sha256)
        return _b64(mac.digest())

    def check_csrf(self, session: Mapping[str, Any], given: object) -> bool:
        """Tell whether a form's CSRF field belongs to this session (constant time)."""
        if not isinstance(given, str) or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_token(session).encode())
