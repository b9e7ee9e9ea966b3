"""Reading the JSON answers of CXone's token and discovery endpoints (`gateway.cxone.auth`)."""

from __future__ import annotations

from typing import Any

from gateway import jsonutil
from gateway.errors import GatewayError


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object a body holds; None when it is empty, not JSON or not an object."""
    if not raw.strip():
        return None
    try:
        doc = jsonutil.loads(raw)
    except GatewayError:
        return None
    return doc if isinstance(doc, dict) else None


def oauth_error(raw: bytes) -> tuple[str | None, str]:
    """Return (error code, description) of an RFC 6749 5.2 error body, if any."""
    doc = json_object(raw)
    if doc is None:
        return None, ""
    code = doc.get("error")
    detail = doc.get("error_description") or doc.get("message") or ""
    code_s = code if isinstance(code, str) and code else None
    detail_s = detail if isinstance(detail, str) else ""
    if code_s and detail_s:
        return code_s, f"{code_s}: {detail_s}"
    return code_s, detail_s or (code_s or "")


def positive_number(value: Any) -> float | None:
    """A lifetime in seconds (`expires_in`): above 0 and below ten years, else None.

    Numbers in strings count too; booleans do not.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if 0 < number < 10 * 365 * 86400 else None
