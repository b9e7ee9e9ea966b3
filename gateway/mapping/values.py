"""Small value helpers shared by expressions and templates: times, exact strings, merging."""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway import jsonutil

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NUMBERS = (int, float)  # a tuple: `int | float` would build a union on every evaluation
_NUMERIC = re.compile(r"^\s*-?[0-9]+(\.[0-9]+)?\s*$")
_LONG_FRACTION = re.compile(r"(\.[0-9]{6})[0-9]+")

# Magnitudes that tell epoch units apart (auto-detection in `iso`): below 1e11 a number
# is seconds (1e11 s is the year 5138), below 1e14 milliseconds, below 1e17 microseconds,
# else nanoseconds.
_UNITS = ((Decimal("1e11"), 1000), (Decimal("1e14"), 1), (Decimal("1e17"), Decimal("0.001")))


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {type_name(value)}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else repr(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValueError("expected a number or a numeric text, got a text that is not one")
    return number


# The last whole second formatted, and its text: events come in bursts of the same second
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso_from_ms(ms: Decimal | int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with exactly three fraction digits and Z."""
    global _last_second
    whole = ms if type(ms) is int else int(Decimal(ms).to_integral_value(rounding=ROUND_FLOOR))
    seconds, millis = divmod(whole, 1000)
    last = _last_second  # one read: another thread may replace it meanwhile
    if last[0] == seconds:
        return f"{last[1]}.{millis:03d}Z"
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{ms} milliseconds is out of the supported date range") from None
    if moment.year < 1000:  # strftime does not pad such years on every platform
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
    text = (  # the same digits as strftime, in a third of its time
        f"{moment.year}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}"
    )
    _last_second = (seconds, text)
    return f"{text}.{millis:03d}Z"


def iso_ms(value: Any) -> str:
    """Epoch milliseconds (number or numeric string) -> ISO-8601."""
    if type(value) is int:  # the usual case: exact already, no Decimal needed
        return iso_from_ms(value)
    return iso_from_ms(_decimal(value))


def iso_s(value: Any) -> str:
    """Epoch seconds (number or numeric string, fractions allowed) -> ISO-8601."""
    return iso_from_ms(_decimal(value) * 1000)


def iso(value: Any) -> str:
    """Any usual time form (epoch s/ms/us/ns, numeric string, ISO string) -> ISO-8601 UTC."""
    if isinstance(value, str) and not _NUMERIC.match(value):
        return _iso_from_text(value)
    number = _decimal(value)
    for limit, factor in _UNITS:
        if abs(number) < limit:
            return iso_from_ms(number * factor)
    return iso_from_ms(number / 1_000_000)


def _iso_from_text(text: str) -> str:
    cleaned = _LONG_FRACTION.sub(r"\1", text.strip())
    if cleaned.endswith(("z", "Z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"a text of {len(text)} character(s) is not an ISO-8601 time or an epoch number"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return iso_from_ms(ms)


def now_iso_ms(now: float) -> str:
    """Format a Unix time in seconds as ISO-8601 with milliseconds."""
    return iso_from_ms(Decimal(repr(now)) * 1000)


# The clock behind `now_iso_ms()` in templates and expressions; inline tests fix it.
_CLOCK: ContextVar[Callable[[], float]] = ContextVar("byoc_mapping_clock", default=time.time)


@contextmanager
def fixed_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Let `now_iso_ms()` read `clock` for the duration of a block (inline tests)."""
    token = _CLOCK.set(clock)
    try:
        yield
    finally:
        _CLOCK.reset(token)


def current_iso_ms() -> str:
    """The current time of the mapping clock as ISO-8601 with milliseconds."""
    return now_iso_ms(_CLOCK.get()())


def to_str(value: Any) -> str | None:
    """Convert to a string without losing digits (never 1e+18); null stays null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return jsonutil.dumps_str(value)


def type_name(value: Any) -> str:
    """Name a value's type the way the mapping language does (JSON names)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def deep_merge(base: Any, override: Any) -> Any:
    """Merge `override` into `base`: objects merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return override


def escape_pointer(token: str) -> str:
    """Escape one JSON-pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def is_id_field(name: str) -> bool:
    """Say whether a field holds an id (`id`, `*_id`, `reply_to`): numbers there become text."""
    return name in ("id", "reply_to") or name.endswith("_id")


@cache
def _mime_table() -> mimetypes.MimeTypes:
    # An instance knows Python's built-in table only (plus nothing read from files), so
    # the answer does not depend on the machine's /etc/mime.types.
    return mimetypes.MimeTypes()


def guess_content_type(*names: Any) -> str | None:
    """The media type told by the first name or URL path with a known extension."""
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        path = unquote(urlsplit(name).path) if "://" in name else name
        kind, _ = _mime_table().guess_type("file:///x/" + path.rsplit("/", 1)[-1], strict=True)
        if kind is not None:
            return kind
    return None
