"""The Jinja sandbox templates render in: filters, globals and finalize per mode.

One immutable sandbox per rendering mode, with strict undefined: "native" and "text"
leaves turn null into "" in text and refuse `omit` there; "path" leaves URL-quote every
expression (the `unquoted` filter opts out) and refuse null.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway import jsonutil
from gateway.mapping import bridging, values

Mode = Literal["native", "text", "path"]


class _Omit:
    """The `omit` sentinel: the key or element it is assigned to is left out."""

    _instance: _Omit | None = None

    def __new__(cls) -> _Omit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "omit"

    def __str__(self) -> str:
        raise RenderError("`omit` can only be the whole value of a key or list element")


OMIT = _Omit()


class _Unquoted(str):
    """Text marked by the `unquoted` filter: a path/url expression inserts it as is."""


class RenderError(Exception):
    """A template failed on one input; the reason names the field and the place."""


def _now_iso_ms() -> str:
    return values.current_iso_ms()


def _urlquote(value: Any, safe: str = "") -> str:
    return quote(values.to_str(value) or "", safe=safe)


def _tojson(value: Any) -> str:
    return jsonutil.dumps_str(value)


def _text_finalize(value: Any) -> Any:
    if value is None:
        return ""
    if value is OMIT:
        raise RenderError("`omit` can only be the whole value of a key or list element")
    return value


def _path_finalize(value: Any) -> str:
    if isinstance(value, _Unquoted):
        return str(value)
    if value is None or value is OMIT:
        raise RenderError("an expression in the path or url gave null")
    return quote(values.to_str(value) or "", safe="")


def _make_env(finalize: Callable[[Any], Any]) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=finalize,
        keep_trailing_newline=True,
    )
    env.filters.update(
        urlquote=_urlquote,
        iso_ms=lambda v: None if v is None else values.iso_ms(v),
        iso_s=lambda v: None if v is None else values.iso_s(v),
        iso=lambda v: None if v is None else values.iso(v),
        to_str=values.to_str,
        tojson=_tojson,
        unquoted=lambda v: _Unquoted(values.to_str(v) or ""),
        join_ids=bridging.join_ids,
        split_ids=bridging.split_ids,
        media_url=bridging.media_url,
    )
    env.globals.update(omit=OMIT, now_iso_ms=_now_iso_ms)
    return env


@cache
def environment(mode: Mode) -> ImmutableSandboxedEnvironment:
    """Return the shared sandbox for a rendering mode (paths URL-quote every expression)."""
    return _make_env(_path_finalize if mode == "path" else _text_finalize)
