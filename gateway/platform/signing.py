"""Sign sample requests as a platform would, from a mapping's `webhook.signature` spec.

For `byoc-gateway try`, the sandbox and tests: the headers a platform sends with a
body, built from the same compiled spec that verifies them, and read back through it
before they are returned.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import Clock, system_clock
from gateway.errors import ConfigError, Problem, Unauthorized
from gateway.platform.signatures import compile_verifier
from gateway.platform.verifier import DIGESTS, HeaderSource, decode, encode, key_bytes
from gateway.secrets import Secret

__all__ = ["sign"]

_REGEX_META: Final = frozenset(".^$*+?{}[]|()")
_Key = str | bytes | Secret | Ed25519PrivateKey


def sign(
    spec: Mapping[str, Any],
    raw_body: bytes,
    *,
    timestamp: float | None = None,
    url: str = "",
    form: Mapping[str, str] | None = None,
    secret_or_private_key: _Key | None = None,
    clock: Clock = system_clock,
    where: str = "/webhook/signature",
    file: str = "",
) -> dict[str, str]:
    """Return the headers a platform would send with `raw_body` (for samples and tests).

    hmac and shared-secret schemes use `secret_or_private_key`, by default the spec's
    first non-empty secret; ed25519 needs the private key (object, PEM, or the 32-byte
    seed as bytes, hex or base64). `timestamp` defaults to `clock()`.
    """
    v = compile_verifier(spec, where=where, file=file, clock=clock, check_secrets=False)
    if v.header is None:
        return {}

    def problem(reason: str, fix: str) -> ConfigError:
        return ConfigError(Problem(file, where, reason, fix))

    source = v.signing.timestamp
    stamp = None
    if source is not None:
        at = clock() if timestamp is None else timestamp
        stamp = str(int(at * 1000)) if v.signing.ms else str(int(at))
    message = v.message(raw_body, stamp, url, form)
    key = secret_or_private_key
    if v.scheme == "ed25519":
        try:
            if key is None:
                raise ValueError("signing with ed25519 needs the platform's private key")
            private = _load_private_key(key)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise problem(
                str(exc), "pass the private key: PEM, or the seed as hex/base64"
            ) from None
        text = encode(private.sign(message), v.signing.encoding)
    else:
        secret = next(iter(v.secrets), None) if key is None else key_bytes(key)
        if not secret:
            raise problem("no secret to sign with", "set a secret in the spec or pass one")
        digest = DIGESTS.get(v.scheme)
        if digest is None:  # shared-secret: the secret itself travels
            text = secret.decode("utf-8", "surrogateescape")
        else:
            text = encode(hmac.new(secret, message, digest).digest(), v.signing.encoding)

    headers: dict[str, str] = {}
    value = _fill(v.header, v.prefix + text)
    if source is not None and stamp is not None and value is not None:
        stamped = _fill(source, stamp)
        if stamped is None or source.key != v.header.key:
            headers[source.name] = stamped or ""  # "" fails the read-back below
        else:
            value = f"{stamped},{value}"  # one header, Stripe style: t=...,v1=...
    if value is not None:
        headers[v.header.name] = value
        try:  # read it back: a pattern inverted wrongly must not give a wrong header
            if v.candidates(value) == [text] and v.read_timestamp(headers) == stamp:
                return headers
        except Unauthorized:
            pass
    raise problem(
        "cannot write a header that signature_pattern and timestamp.pattern read back",
        "build the signature header by hand",
    )


def _fill(source: HeaderSource, value: str) -> str | None:
    """Write `value` where `source.pattern` reads it; None if the pattern is not `lit(...)lit`."""
    if source.pattern is None:
        return value
    pattern = source.pattern.pattern
    start = end = -1
    depth, i, in_class = 0, 0, False
    while i < len(pattern) and end < 0:  # find group 1's parentheses
        c = pattern[i]
        if c == "\\":
            i += 1
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            start = i if start < 0 else start
            depth += 1
        elif c == ")":
            depth -= 1
            end = i if depth == 0 else end
        i += 1
    if end < 0:
        return None
    rest = pattern[end + 1 :]
    rest = rest[:-1] if rest.endswith("$") and not rest.endswith("\\$") else rest
    before, after = _literal(pattern[:start].removeprefix("^")), _literal(rest)
    if before is None or after is None:
        return None
    return before + value + after


def _literal(fragment: str) -> str | None:
    """The text a regex fragment matches, if it is plain (escaped) text."""
    out: list[str] = []
    escaped = False
    for c in fragment:
        if escaped:
            if c.isalnum():  # \d, \w, \b ...: a class or an assertion, not text
                return None
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in _REGEX_META:
            return None
        else:
            out.append(c)
    return None if escaped else "".join(out)


def _load_private_key(value: _Key) -> Ed25519PrivateKey:
    """Read an Ed25519 private key: object, 32-byte seed (raw, hex, base64) or PEM."""
    if isinstance(value, Ed25519PrivateKey):
        return value
    text = value.reveal() if isinstance(value, Secret) else value
    if isinstance(text, str) and text.strip().startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.strip().encode("ascii"), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"a {type(key).__name__}, not an Ed25519 key")
        return key
    seed: bytes | None = text if isinstance(text, bytes) else None
    if isinstance(text, str):
        seed = bytes.fromhex(text) if len(text) == 64 else decode(text.strip(), "base64")
    if seed is None or len(seed) != 32:
        raise ValueError("not an Ed25519 private key (PEM, or a 32-byte seed as hex/base64)")
    return Ed25519PrivateKey.from_private_bytes(seed)
