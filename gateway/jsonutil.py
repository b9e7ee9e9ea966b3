"""One JSON implementation for the whole gateway.

orjson is fast and keeps integers exact up to 64 bits; a document holding a longer
digit run (an id of 20+ digits) is parsed by the standard library instead, which keeps
every digit, so ids never turn into floats.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from gateway.errors import BadRequest

JSONDecodeError = orjson.JSONDecodeError
_LONG_NUMBER = re.compile(rb"[0-9]{20}")


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
        if _LONG_NUMBER.search(raw if isinstance(raw, bytes) else raw.encode()):
            return json.loads(raw)
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
