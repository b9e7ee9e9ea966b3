"""Functions that bridge what a webhook lacks: composite thread ids and proxied media URLs.

Both JMESPath (`join_ids(...)`, `split_ids(...)`, `media_url(...)`) and Jinja (the
filters of the same names) call these. `media_url` signs a URL on the gateway's own
listener; the signer is the runtime's (gateway.media), made visible for the duration of
one rendering by `media_signing`, so the engine itself holds no key and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from gateway.mapping.values import to_str, type_name

SEPARATOR = ":"
MediaSigner = Callable[[Mapping[str, Any]], str]  # fields -> absolute URL
# Shown while a route is only routed (at intake) and never sent anywhere.
PENDING_MEDIA_URL = "https://media.invalid/pending"


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(SEPARATOR, "%3A")


def _unescape(part: str) -> str:
    return part.replace("%3A", SEPARATOR).replace("%3a", SEPARATOR).replace("%25", "%")


def join_ids(parts: list[Any] | tuple[Any, ...]) -> str:
    """Join ids into one (`T1:C2`); a `:` or `%` inside a part is escaped, so it splits back."""
    out = []
    for part in parts:
        text = to_str(part)
        if text is None:
            raise ValueError("join_ids() got a null part; every part of a composite id is needed")
        out.append(_escape(text))
    return SEPARATOR.join(out)


def split_ids(composite: Any) -> list[str] | None:
    """Split what `join_ids` built back into its parts (null stays null)."""
    if composite is None:
        return None
    if not isinstance(composite, str):
        raise ValueError(f"split_ids() takes text, not {type_name(composite)}")
    return [_unescape(p) for p in composite.split(SEPARATOR)]


_SIGNER: ContextVar[MediaSigner | None] = ContextVar("byoc_media_signer", default=None)


@contextmanager
def media_signing(signer: MediaSigner | None) -> Iterator[None]:
    """Let `media_url()` sign with `signer` for the duration of a block."""
    token = _SIGNER.set(signer)
    try:
        yield
    finally:
        _SIGNER.reset(token)


def media_url(value: Any) -> str | None:
    """A signed, expiring URL on the gateway that streams this platform file (null: null).

    `value` is the file's URL (text) or an object of fields for the mapping's
    `media.request` template (`{media_id: ...}`).
    """
    if value is None:
        return None
    if isinstance(value, str):
        fields: dict[str, Any] = {"url": value}
    elif isinstance(value, Mapping):
        fields = dict(value)
    else:
        raise ValueError(f"media_url() takes a URL or an object, not {type_name(value)}")
    signer = _SIGNER.get()
    return PENDING_MEDIA_URL if signer is None else signer(fields)
