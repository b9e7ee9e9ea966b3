"""Compile a mapping's `webhook.signature` spec into a `Verifier`.

The spec (docs/signatures.md; docs/internals.md section 5) compiles once: regexes, the
payload template and the keys are all prepared at load time, and every problem is
reported with its file and JSON pointer. The compiled `Verifier` (verifying the raw
request bytes) is in `gateway.platform.verifier`; signed sample requests are built by
`gateway.platform.signing.sign`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.clock import Clock, system_clock
from gateway.errors import ConfigError, Problem
from gateway.platform.verifier import (
    MAX_CANDIDATES,
    NO_SIGNING,
    HeaderSource,
    Signing,
    Template,
    Verifier,
    decode,
    key_bytes,
)

__all__ = ["MAX_CANDIDATES", "SCHEMES", "Verifier", "compile_verifier"]

SCHEMES: Final = ("hmac-sha256", "hmac-sha1", "ed25519", "shared-secret", "none")
_PLACEHOLDERS: Final = frozenset({"body", "timestamp", "url", "form_sorted"})
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


def _parse_payload(text: str) -> Template:
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
        raw = bytes.fromhex(text) if len(text) == 64 else decode(text, "base64")
        if raw is None:
            raise ValueError("not hex, base64 or PEM")
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
        key = serialization.load_der_public_key(raw)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"a {type(key).__name__}, not an Ed25519 key")
    return key


class _Checker:
    """Collect located problems while compiling one spec."""

    def __init__(self, file: str, where: str) -> None:
        self.file = file
        self.where = where
        self.problems: list[Problem] = []

    def bad(self, sub: str, reason: str, fix: str = "") -> None:
        self.problems.append(Problem(self.file, self.where + sub, reason, fix))

    def header(self, spec: Mapping[str, Any], key: str, pattern_key: str, sub: str) -> HeaderSource:
        name = spec.get(key)
        if name is None:
            self.bad(f"{sub}/{key}", "is required", "name the header, e.g. X-Hub-Signature-256")
        elif not isinstance(name, str) or not _TOKEN.fullmatch(name):
            self.bad(f"{sub}/{key}", "must be a header name", "e.g. X-Hub-Signature-256")
        name = name if isinstance(name, str) else ""
        return HeaderSource(
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
            raw = key_bytes(item)
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
    signing = NO_SIGNING if scheme == "shared-secret" else _compile_signing(ck, spec)
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


def _compile_signing(ck: _Checker, spec: Mapping[str, Any]) -> Signing:
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

    payload: Template = ("body",)
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
    return Signing(
        timestamp=timestamp,
        ms=isinstance(ts, Mapping) and ts.get("unit") == "ms",
        tolerance=float(tolerance) if isinstance(tolerance, int | float) else None,
        payload=payload,
        encoding=str(encoding),
    )
