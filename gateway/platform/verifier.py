"""Webhook signatures checked on the raw request bytes: `Verifier`, compiled once per mapping.

`Verifier.verify` works on the raw request bytes only and fails closed with
`Unauthorized` (code `invalid_signature`) and one of three short reasons: "missing
signature", "invalid signature", "stale timestamp". A spec becomes a Verifier in
`gateway.platform.signatures.compile_verifier`; `gateway.platform.signing` builds
signed sample requests from the same spec.

The timestamp counts as part of the signature: a missing timestamp header is
"missing signature", one that does not parse is "invalid signature". Freshness is
checked after the signature, so "stale timestamp" only ever answers a genuine but
old (or future) delivery: what an operator chasing clock skew needs to see.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.clock import Clock, system_clock
from gateway.errors import Unauthorized
from gateway.secrets import Secret

MAX_CANDIDATES: Final = 8  # signatures read from one header; the rest are ignored
MAX_HEADER_CHARS: Final = 8192  # a longer signature or timestamp header is refused
MAX_FORM_FIELDS: Final = 1000  # for {form_sorted}
DIGESTS: Final[Mapping[str, Callable[[], Any]]] = {
    "hmac-sha256": hashlib.sha256,
    "hmac-sha1": hashlib.sha1,
}
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_DIGITS: Final = re.compile(r"[0-9]{1,20}")

Template = tuple[bytes | str, ...]  # bytes: literal text; str: a placeholder name


class HeaderSource(NamedTuple):
    """Where a value is read from: a header and an optional regex (group 1)."""

    name: str
    key: str  # lower-cased name
    pattern: re.Pattern[str] | None


class Signing(NamedTuple):
    """What the hmac and ed25519 schemes sign and how they encode it."""

    timestamp: HeaderSource | None = None
    ms: bool = False
    tolerance: float | None = None
    payload: Template = ("body",)
    encoding: str = "hex"


NO_SIGNING: Final = Signing()
_STAMP_DOT_BODY: Final[Template] = ("timestamp", b".", "body")  # `{timestamp}.{body}`


def _fail(reason: str) -> Unauthorized:
    return Unauthorized(reason, code="invalid_signature")


@dataclass(frozen=True)
class Verifier:
    """A compiled `webhook.signature` spec; build it with `compile_verifier`."""

    scheme: str
    header: HeaderSource | None = None  # None only for scheme none
    prefix: str = ""
    signing: Signing = NO_SIGNING
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    public_keys: tuple[Ed25519PublicKey, ...] = field(default=(), repr=False)
    clock: Clock = field(default=system_clock, repr=False)

    @cached_property
    def _keyed(self) -> tuple[hmac.HMAC, ...]:
        """An HMAC keyed with each secret, nothing hashed yet (hmac schemes only)."""
        digest = DIGESTS.get(self.scheme)
        if digest is None:
            return ()
        return tuple(hmac.new(secret, digestmod=digest) for secret in self.secrets)

    @property
    def signs_url(self) -> bool:
        """Whether the signed message covers the URL (callers then work out `url`)."""
        return self.header is not None and "url" in self.signing.payload

    def verify(
        self,
        raw_body: bytes,
        headers: Mapping[str, str],
        url: str = "",
        form: Mapping[str, str] | None = None,
    ) -> None:
        """Return if the request is authentic; raise `Unauthorized` otherwise."""
        if self.header is None:  # scheme none, explicitly allowed
            return
        value = _lookup(headers, self.header)
        if value is None:
            raise _fail("missing signature")
        candidates = self.candidates(value)
        if not candidates:
            raise _fail("invalid signature")
        stamp = self.read_timestamp(headers)
        if not self._matches(candidates, raw_body, stamp, url, form):
            raise _fail("invalid signature")
        if self.signing.tolerance is not None and stamp is not None:
            at = int(stamp) / (1000 if self.signing.ms else 1)
            if abs(self.clock() - at) > self.signing.tolerance:
                raise _fail("stale timestamp")

    def candidates(self, value: str) -> list[str]:
        """Read at most MAX_CANDIDATES signatures, prefix stripped (missing prefix: dropped)."""
        assert self.header is not None
        if len(value) > MAX_HEADER_CHARS:
            return []
        pattern = self.header.pattern
        if pattern is None:
            found = [value.strip()]
        elif pattern.groups == 1:  # findall gives group 1 itself ("" where it took no part)
            found = pattern.findall(value)[:MAX_CANDIDATES]
        else:
            groups = (m.group(1) for m in pattern.finditer(value))
            found = [g for g in islice(groups, MAX_CANDIDATES) if g is not None]
        n = len(self.prefix)
        if not n:
            return [c for c in found if c]
        return [c[n:] for c in found if c.startswith(self.prefix) and len(c) > n]

    def read_timestamp(self, headers: Mapping[str, str]) -> str | None:
        source = self.signing.timestamp
        if source is None:
            return None
        value = _lookup(headers, source)
        if value is None:
            raise _fail("missing signature")
        stamp: str | None = value.strip()
        if source.pattern is not None and len(value) <= MAX_HEADER_CHARS:
            match = source.pattern.search(value)
            stamp = match.group(1) if match else None
        if stamp is None or not _DIGITS.fullmatch(stamp):
            raise _fail("invalid signature")
        return stamp

    def _matches(
        self,
        candidates: list[str],
        raw_body: bytes,
        stamp: str | None,
        url: str,
        form: Mapping[str, str] | None,
    ) -> bool:
        if self.scheme == "shared-secret":  # the candidate is the secret itself
            return _any_equal([_utf8(c) for c in candidates], self.secrets)
        message = self.message(raw_body, stamp, url, form)
        encoding = self.signing.encoding
        decoded = [d for c in candidates if (d := decode(c, encoding))]
        if self._keyed:  # hmac: each secret's keyed state prepared once, copied per message
            return _any_equal(decoded, [_sign(keyed, message) for keyed in self._keyed])
        for signature in decoded:  # ed25519: public-key checks, no secret to leak by timing
            for key in self.public_keys:
                try:
                    key.verify(signature, message)
                except InvalidSignature:
                    continue
                return True
        return False

    def message(
        self, raw_body: bytes, stamp: str | None, url: str, form: Mapping[str, str] | None
    ) -> bytes:
        """Build the signed bytes from the payload template; the body is used untouched."""
        payload = self.signing.payload
        timestamp = stamp.encode("ascii") if stamp else b""
        if payload == _STAMP_DOT_BODY:  # the most common template, without the general join
            return timestamp + b"." + raw_body
        values = {"body": raw_body, "timestamp": timestamp}
        if "url" in payload:
            values["url"] = _utf8(url)
        if "form_sorted" in payload:
            values["form_sorted"] = _form_sorted(raw_body, form)
        return b"".join([p if isinstance(p, bytes) else values[p] for p in payload])


def _sign(keyed: hmac.HMAC, message: bytes) -> bytes:
    """HMAC of `message` from a keyed state (a copy skips keying: 1.1 µs against 1.4)."""
    mac = keyed.copy()
    mac.update(message)
    return mac.digest()


def _any_equal(given: list[bytes], expected: list[bytes] | tuple[bytes, ...]) -> bool:
    """Compare every candidate with every expected value in constant time."""
    ok = False
    for g in given:
        for e in expected:
            ok |= hmac.compare_digest(g, e)
    return ok


def _lookup(headers: Mapping[str, str], source: HeaderSource) -> str | None:
    """Find a header case-insensitively in a CIMultiDict or any plain dict."""
    value = headers.get(source.name)
    if value is None:
        value = headers.get(source.key)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == source.key), None)
    return value


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeError:
        raise _fail("invalid signature") from None


def _form_sorted(raw_body: bytes, form: Mapping[str, str] | None) -> bytes:
    """Concatenate key+value of every form field, sorted (Twilio style)."""
    if form is None:
        try:
            pairs = parse_qsl(
                raw_body.decode("utf-8", "replace"),
                keep_blank_values=True,
                max_num_fields=MAX_FORM_FIELDS,
            )
        except ValueError:
            raise _fail("invalid signature") from None
    else:
        pairs = list(form.items())  # a MultiDict yields every pair
        if len(pairs) > MAX_FORM_FIELDS:
            raise _fail("invalid signature")
    return _utf8("".join(k + v for k, v in sorted(pairs)))


def decode(text: str, encoding: str) -> bytes | None:
    """Decode a signature; None unless `text` is a canonical hex or base64 encoding."""
    if encoding == "hex":
        if len(text) % 2 or not _HEX.fullmatch(text):
            return None
        return bytes.fromhex(text)
    url_safe = "-" in text or "_" in text
    if url_safe and ("+" in text or "/" in text):
        return None
    std = text.translate(str.maketrans("-_", "+/")) if url_safe else text
    bare = std.rstrip("=")
    try:
        raw = base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    canonical = base64.b64encode(raw).decode("ascii")
    if std not in (canonical, canonical.rstrip("=")):  # no spare bits, no odd padding
        return None
    return raw


def encode(raw: bytes, encoding: str) -> str:
    return raw.hex() if encoding == "hex" else base64.b64encode(raw).decode("ascii")


def key_bytes(value: object) -> bytes | None:
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, str):
        return value.encode("utf-8")
    return value if isinstance(value, bytes) else None
