"""JSON log lines with request id, channel and route; secrets always masked.

Message text is logged only when the operator opts in (`logging.log_message_text`).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

from gateway import jsonutil
from gateway.secrets import REDACTOR

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_CONTEXT_FIELDS = (
    "mapping",
    "channel",
    "route",
    "cxone_id",
    "platform_id",
    "outcome",
    "duration_ms",
    "text",  # message text: only through text_for_log, so redacted unless opted in
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key in _CONTEXT_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return REDACTOR.redact(jsonutil.dumps_str(entry))


class TextFormatter(logging.Formatter):
    """Human-readable lines, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.redact(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Install one handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_byoc", False):
            root.removeHandler(old)
    handler._byoc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def text_for_log(text: str, opted_in: bool) -> str:
    """Return the message text itself only when the operator opted in."""
    return text if opted_in else f"<{len(text)} chars redacted>"
