"""Verify webhook signatures (and build signed sample requests).

A mapping's `webhook.signature` spec (docs/signatures.md; docs/internals.md section 5)
compiles once into a `Verifier`: regexes, the payload template and the keys are all
prepared at load time, and every problem is reported with its file and JSON pointer.
`Verifier.verify` then works on the raw request bytes only and fails closed with
`Unauthorized` (code `invalid_signature`) and one of three short reasons:
"missing signature", "invalid signature", "stale timestamp".

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
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.clock import Clock, system_clock
from gateway.errors import ConfigError, Problem, Unauthorized
from gateway.secrets import Secret

__all__ = ["MAX_CANDIDATES", "MAX_HEADER_CHARS", "SCHEMES", "Verifier", "compile_verifier", "sign"]

SCHEMES: Final = ("hmac-sha256", "hmac-sha1", "ed25519", "shared-secret", "none")
MAX_CANDIDATES: Final = 8  # signatures read from one header; the rest are ignored
MAX_HEADER_CHARS: Final = 8192  # a longer signature or timestamp header is refused
MAX_FORM_FIELDS: Final = 1000  # for {form_sorted}
_PLACEHOLDERS: Final = frozenset({"body", "timestamp", "url", "form_sorted"})
_DIGESTS: Final[Mapping[str, Callable[[], Any]]] = {
    "hmac-sha256": hashlib.sha256,
    "hmac-sha1": hashlib.sha1,
}
_READ_KEYS: Final = ("scheme", "header", "signature_pattern", "prefix")
_SIGNING_KEYS: Final = (*_READ_KEYS, "timestamp", "tolerance_seconds", "payload", "encoding")
_ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "hmac-sha256": frozenset({"secrets", *_SIGNING_KEYS}),
    "hmac-sha1": frozenset({"secrets", *_SIGNING_KEYS}),
    "ed25519": frozenset({"public_keys", *_SIGNING_KEYS}),
    "shared-secret": frozenset({"secrets", *_READ_KEYS}),
    "none": frozenset({"scheme", "allow_unsigned"}),
}
_ALL_KEYS: Final = sorted(set().union(*_ALLOWED.values()))
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_DIGITS: Final = re.compile(r"[0-9]{1,20}")
_REGEX_META: Final = frozenset(".^$*+?{}[]|()")

_Template = tuple[bytes | str, ...]  # bytes: literal text; str: a placeholder name
_Key = str | bytes | Secret | Ed25519PrivateKey


class _Header(NamedTuple):
    """Where a value is read from: a header and an optional regex (group 1)."""

    name: str
    key: str  # lower-cased name
    pattern: re.Pattern[str] | None


class _Signing(NamedTuple):
    """What the hmac and ed25519 schemes sign and how they encode it."""

    timestamp: _Header | None = None
    ms: bool = False
    tolerance: float | None = None
    payload: _Template = ("body",)
    encoding: str = "hex"


_NO_SIGNING: Final = _Signing()


def _fail(reason: str) -> Unauthorized:
    return Unauthorized(reason, code="invalid_signature")


@dataclass(frozen=True)
class Verifier:
    """A compiled `webhook.signature` spec; build it with `compile_verifier`."""

    scheme: str
    header: _Header | None = None  # None only for scheme none
    prefix: str = ""
    signing: _Signing = _NO_SIGNING
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    public_keys: tuple[Ed25519PublicKey, ...] = field(default=(), repr=False)
    clock: Clock = field(default=system_clock, repr=False)

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
        candidates = self._candidates(value)
        if not candidates:
            raise _fail("invalid signature")
        stamp = self._read_timestamp(headers)
        if not self._matches(candidates, raw_body, stamp, url, form):
            raise _fail("invalid signature")
        if self.signing.tolerance is not None and stamp is not None:
            at = int(stamp) / (1000 if self.signing.ms else 1)
            if abs(self.clock() - at) > self.signing.tolerance:
                raise _fail("stale timestamp")

    def _candidates(self, value: str) -> list[str]:
        """Read at most MAX_CANDIDATES signatures, prefix stripped (missing prefix: dropped)."""
        assert self.header is not None
        if len(value) > MAX_HEADER_CHARS:
            return []
        if self.header.pattern is None:
            found = [value.strip()]
        else:
            groups = (m.group(1) for m in self.header.pattern.finditer(value))
            found = [g for g in islice(groups, MAX_CANDIDATES) if g is not None]
        n = len(self.prefix)
        return [c[n:] for c in found if c.startswith(self.prefix) and len(c) > n]

    def _read_timestamp(self, headers: Mapping[str, str]) -> str | None:
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
        message = self._message(raw_body, stamp, url, form)
        decoded = [d for d in (_decode(c, self.signing.encoding) for c in candidates) if d]
        digest = _DIGESTS.get(self.scheme)
        if digest is not None:
            return _any_equal(
                decoded, [hmac.new(s, message, digest).digest() for s in self.secrets]
            )
        for signature in decoded:  # ed25519: public-key checks, no secret to leak by timing
            for key in self.public_keys:
                try:
                    key.verify(signature, message)
                except InvalidSignature:
                    continue
                return True
        return False

    def _message(
        self, raw_body: bytes, stamp: str | None, url: str, form: Mapping[str, str] | None
    ) -> bytes:
        """Build the signed bytes from the payload template; the body is used untouched."""
        values = {"body": raw_body, "timestamp": (stamp or "").encode("ascii")}
        if "url" in self.signing.payload:
            values["url"] = _utf8(url)
        if "form_sorted" in self.signing.payload:
            values["form_sorted"] = _form_sorted(raw_body, form)
        return b"".join(p if isinstance(p, bytes) else values[p] for p in self.signing.payload)


def _any_equal(given: list[bytes], expected: list[bytes] | tuple[bytes, ...]) -> bool:
    """Compare every candidate with every expected value in constant time."""
    ok = False
    for g in given:
        for e in expected:
            ok |= hmac.compare_digest(g, e)
    return ok


def _lookup(headers: Mapping[str, str], source: _Header) -> str | None:
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


def _decode(text: str, encoding: str) -> bytes | None:
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


def _encode(raw: bytes, encoding: str) -> str:
    return raw.hex() if encoding == "hex" else base64.b64encode(raw).decode("ascii")


def _key_bytes(value: object) -> bytes | None:
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, str):
        return value.encode("utf-8")
    return value if isinstance(value, bytes) else None


def _parse_payload(text: str) -> _Template:
    """Compile a payload template; raise ValueError with a reason."""
    parts: list[bytes | str] = []
    for literal, name, spec, conversion in string.Formatter().parse(text):
        if literal:
            parts.append(literal.encode("utf-8"))
        if name is None:
            continue
        if name not in _PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{name}}}")
        parts.append(name)
    return tuple(parts)


def _load_public_key(text: str) -> Ed25519PublicKey:
    """Read an Ed25519 public key from hex, base64 (raw or DER) or PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key: object = serialization.load_pem_public_key(text.encode("ascii"))
    else:
        raw = bytes.fromhex(text) if len(text) == 64 else _decode(text, "base64")
        if raw is None:
            raise ValueError("not hex, base64 or PEM")
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
        key = serialization.load_der_public_key(raw)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"a {type(key).__name__}, not an Ed25519 key")
    return key


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
        seed = bytes.fromhex(text) if len(text) == 64 else _decode(text.strip(), "base64")
    if seed is None or len(seed) != 32:
        raise ValueError("not an Ed25519 private key (PEM, or a 32-byte seed as hex/base64)")
    return Ed25519PrivateKey.from_private_bytes(seed)


class _Checker:
    """Collect located problems while compiling one spec."""

    def __init__(self, file: str, where: str) -> None:
        self.file = file
        self.where = where
        self.problems: list[Problem] = []

    def bad(self, sub: str, reason: str, fix: str = "") -> None:
        self.problems.append(Problem(self.file, self.where + sub, reason, fix))

    def header(self, spec: Mapping[str, Any], key: str, pattern_key: str, sub: str) -> _Header:
        name = spec.get(key)
        if name is None:
            self.bad(f"{sub}/{key}", "is required", "name the header, e.g. X-Hub-Signature-256")
        elif not isinstance(name, str) or not _TOKEN.fullmatch(name):
            self.bad(f"{sub}/{key}", "must be a header name", "e.g. X-Hub-Signature-256")
        name = name if isinstance(name, str) else ""
        return _Header(
            name, name.lower(), self.regex(f"{sub}/{pattern_key}", spec.get(pattern_key))
        )

    def regex(self, sub: str, value: object) -> re.Pattern[str] | None:
        if value is None:
            return None
        try:
            # ASCII: \d must not match other scripts' digits in a header
            pattern = re.compile(str(value), re.ASCII)
        except re.error as exc:
            self.bad(sub, f"invalid regular expression: {exc}", "fix the regex")
            return None
        if not isinstance(value, str) or pattern.groups < 1:
            self.bad(sub, "must be a regex with a capturing group", "put (...) around the value")
        return pattern

    def keys(self, spec: Mapping[str, Any], key: str, check: bool) -> list[tuple[int, bytes]]:
        """Read `secrets` / `public_keys`: a list of strings, empty ones skipped."""
        value = spec.get(key)
        if not isinstance(value, list | tuple):
            self.bad(f"/{key}", "must be a list of strings", f'write {key}: ["..."]')
            return []
        found = []
        for i, item in enumerate(value):
            raw = _key_bytes(item)
            if raw is None:
                self.bad(f"/{key}/{i}", "must be a string", 'quote it: "..."')
            elif raw:
                found.append((i, raw))
        if not found and check:
            self.bad(
                f"/{key}",
                "every entry is empty, so no request could be verified (fail closed)",
                "set the environment variable the entry refers to",
            )
        return found


def compile_verifier(
    spec: Mapping[str, Any],
    *,
    where: str = "/webhook/signature",
    file: str = "",
    clock: Clock = system_clock,
    check_secrets: bool = True,
) -> Verifier:
    """Compile a `webhook.signature` spec; raise ConfigError naming every problem.

    With `check_secrets=False` (for `check --no-secrets`) all-empty `secrets` or
    `public_keys` are accepted; such a verifier rejects every request.
    """
    ck = _Checker(file, where)
    if not isinstance(spec, Mapping):
        ck.bad("", "must be a mapping", "e.g. {scheme: hmac-sha256, secrets: [...], header: ...}")
        raise ConfigError(ck.problems)
    scheme = spec.get("scheme")
    if not isinstance(scheme, str) or scheme not in _ALLOWED:
        ck.bad("/scheme", f"unknown scheme {scheme!r}", "one of " + ", ".join(SCHEMES))
        raise ConfigError(ck.problems)
    for key in spec:
        if key not in _ALL_KEYS:
            ck.bad(f"/{key}", f"unknown key {key!r}", "valid keys: " + ", ".join(_ALL_KEYS))
        elif key not in _ALLOWED[scheme]:
            ck.bad(f"/{key}", f"{key!r} has no meaning for scheme {scheme}", "remove it")
    if scheme == "none":
        if spec.get("allow_unsigned") is not True:
            ck.bad(
                "/allow_unsigned",
                "scheme none accepts anyone's requests and needs allow_unsigned: true",
                "configure a signature scheme, or add allow_unsigned: true (insecure)",
            )
        if ck.problems:
            raise ConfigError(ck.problems)
        return Verifier(scheme, clock=clock)

    header = ck.header(spec, "header", "signature_pattern", "")
    prefix = spec.get("prefix", "")
    if not isinstance(prefix, str):
        ck.bad("/prefix", "must be a string", 'e.g. "sha256="')
    secrets: list[bytes] = []
    public_keys: list[Ed25519PublicKey] = []
    if scheme != "ed25519":
        secrets = [raw for _, raw in ck.keys(spec, "secrets", check_secrets)]
    else:
        for i, raw in ck.keys(spec, "public_keys", check_secrets):
            try:
                public_keys.append(_load_public_key(raw.decode("utf-8")))
            except (ValueError, UnsupportedAlgorithm) as exc:
                ck.bad(
                    f"/public_keys/{i}",
                    f"not an Ed25519 public key: {exc}",
                    "give the 32-byte key as hex or base64, or a PEM public key",
                )
    signing = _NO_SIGNING if scheme == "shared-secret" else _compile_signing(ck, spec)
    if ck.problems:
        raise ConfigError(ck.problems)
    return Verifier(
        scheme,
        header,
        prefix,
        signing,
        secrets=tuple(secrets),
        public_keys=tuple(public_keys),
        clock=clock,
    )


def _compile_signing(ck: _Checker, spec: Mapping[str, Any]) -> _Signing:
    """Compile timestamp, tolerance, payload and encoding (hmac and ed25519 only)."""
    ts = spec.get("timestamp")
    timestamp = None
    if ts is not None and not isinstance(ts, Mapping):
        ck.bad("/timestamp", "must be a mapping", "{from_header: NAME, pattern: REGEX, unit: s}")
    elif ts is not None:
        for key in [k for k in ts if k not in ("from_header", "pattern", "unit")]:
            ck.bad(f"/timestamp/{key}", f"unknown key {key!r}", "from_header, pattern or unit")
        if ts.get("unit", "s") not in ("s", "ms"):
            ck.bad("/timestamp/unit", f"unknown unit {ts.get('unit')!r}", "s or ms")
        timestamp = ck.header(ts, "from_header", "pattern", "/timestamp")

    tolerance = spec.get("tolerance_seconds")
    if tolerance is not None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance <= 0:
            ck.bad("/tolerance_seconds", "must be a positive number of seconds", "e.g. 300")
        elif ts is None:
            ck.bad(
                "/tolerance_seconds",
                "needs a timestamp to check",
                "add timestamp: {from_header: NAME, unit: s}",
            )

    payload: _Template = ("body",)
    text = spec.get("payload", "{body}")
    try:
        if not isinstance(text, str):
            raise ValueError("not a string")
        payload = _parse_payload(text)
    except ValueError as exc:
        ck.bad(
            "/payload",
            f"not a payload template: {exc}",
            "a string using {body} {timestamp} {url} {form_sorted}; write {{ and }} for braces",
        )
    if ts is not None and "timestamp" not in payload:
        ck.bad(
            "/timestamp",
            "the timestamp is not in the signed payload, so it proves nothing",
            "add {timestamp} to payload, or remove timestamp",
        )
    if ts is None and "timestamp" in payload:
        ck.bad(
            "/payload",
            "uses {timestamp} but no timestamp is configured",
            "add timestamp: {from_header: NAME, unit: s}",
        )

    encoding = spec.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        ck.bad("/encoding", f"unknown encoding {encoding!r}", "hex or base64")
    return _Signing(
        timestamp=timestamp,
        ms=isinstance(ts, Mapping) and ts.get("unit") == "ms",
        tolerance=float(tolerance) if isinstance(tolerance, int | float) else None,
        payload=payload,
        encoding=str(encoding),
    )


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
    message = v._message(raw_body, stamp, url, form)
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
        text = _encode(private.sign(message), v.signing.encoding)
    else:
        secret = next(iter(v.secrets), None) if key is None else _key_bytes(key)
        if not secret:
            raise problem("no secret to sign with", "set a secret in the spec or pass one")
        digest = _DIGESTS.get(v.scheme)
        if digest is None:  # shared-secret: the secret itself travels
            text = secret.decode("utf-8", "surrogateescape")
        else:
            text = _encode(hmac.new(secret, message, digest).digest(), v.signing.encoding)

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
            if v._candidates(value) == [text] and v._read_timestamp(headers) == stamp:
                return headers
        except Unauthorized:
            pass
    raise problem(
        "cannot write a header that signature_pattern and timestamp.pattern read back",
        "build the signature header by hand",
    )


def _fill(source: _Header, value: str) -> str | None:
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
