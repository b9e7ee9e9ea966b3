"""Strict checks of what the gateway sends to CXone and of what it answers CXone.

A check appends one readable problem per violation, each starting with the path of
the field (`thread.idOnExternalPlatform: required`), so a 400 lists all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from yarl import URL

Problems = list[str]
Check = Callable[[Any, str, Problems], None]
Field = tuple[bool, Check]

MESSAGE_TYPES = ("TEXT", "PLUGIN", "QUICK_REPLIES", "LIST_PICKER", "RICH_LINK", "ADAPTIVE_CARD")
MESSAGE_STATUSES = ("delivered", "seen", "failed")
CONTACT_STATUSES = ("new", "open", "pending", "escalated", "resolved", "closed", "trashed")
ISO_MS_EXAMPLE = "2025-11-26T12:00:00.123Z"

_ISO_MS = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.\d{3}(Z|[+-]\d{2}:\d{2})")
_ISO = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


def run(check: Check, value: Any) -> Problems:
    """Return every problem `check` finds in `value` (empty: valid)."""
    problems: Problems = []
    check(value, "", problems)
    return problems


def _at(where: str) -> str:
    return where or "body"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def req(check: Check) -> Field:
    """Mark a field as required."""
    return (True, check)


def opt(check: Check) -> Field:
    """Mark a field as optional (absent is fine, null is not)."""
    return (False, check)


def obj(fields: Mapping[str, Field], *, extra: bool = False, hint: bool = False) -> Check:
    """Check an object's fields; unknown fields are problems unless `extra`."""

    def check(value: Any, where: str, out: Problems) -> None:
        if not isinstance(value, dict):
            out.append(f"{_at(where)}: must be an object, got {_kind(value)}")
            return
        for name, (required, sub) in fields.items():
            path = f"{where}.{name}" if where else name
            if name in value:
                sub(value[name], path, out)
            elif required:
                out.append(f"{path}: required")
        if not extra:
            allowed = f" (allowed: {', '.join(fields)})" if hint else ""
            for name in value:
                if name not in fields:
                    out.append(f"{where + '.' if where else ''}{name}: unknown field{allowed}")

    return check


def string(*, empty: bool = False) -> Check:
    """Check a string (non-blank unless `empty`)."""

    def check(value: Any, where: str, out: Problems) -> None:
        if not isinstance(value, str):
            out.append(f"{_at(where)}: must be a string, got {_kind(value)}")
        elif not empty and not value.strip():
            out.append(f"{_at(where)}: must not be empty")

    return check


def boolean(value: Any, where: str, out: Problems) -> None:
    """Check a boolean."""
    if not isinstance(value, bool):
        out.append(f"{_at(where)}: must be a boolean, got {_kind(value)}")


def anything(value: Any, where: str, out: Problems) -> None:
    """Accept any JSON value."""


def one_of(*choices: str) -> Check:
    """Check a string from a fixed set."""

    def check(value: Any, where: str, out: Problems) -> None:
        if value not in choices or not isinstance(value, str):
            listed = " | ".join(choices)
            out.append(f"{_at(where)}: must be one of {listed}, got {_short(value)}")

    return check


def nullable(inner: Check) -> Check:
    """Accept null or what `inner` accepts."""

    def check(value: Any, where: str, out: Problems) -> None:
        if value is not None:
            inner(value, where, out)

    return check


def array(item: Check) -> Check:
    """Check an array and each of its items."""

    def check(value: Any, where: str, out: Problems) -> None:
        if not isinstance(value, list):
            out.append(f"{_at(where)}: must be an array, got {_kind(value)}")
            return
        for index, element in enumerate(value):
            item(element, f"{where}[{index}]", out)

    return check


def url(value: Any, where: str, out: Problems) -> None:
    """Check an absolute http(s) URL."""
    if not isinstance(value, str):
        out.append(f"{_at(where)}: must be a URL string, got {_kind(value)}")
        return
    try:
        parsed = URL(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        out.append(f"{_at(where)}: must be an absolute http(s) URL")


def timestamp(*, millis: bool) -> Check:
    """Check ISO-8601 with a time zone; `millis`: exactly three fractional digits."""
    pattern = _ISO_MS if millis else _ISO
    expected = (
        f"ISO-8601 with exactly three fractional digits and a time zone, e.g. {ISO_MS_EXAMPLE}"
        if millis
        else "ISO-8601 with a time zone, e.g. 2025-11-26T12:00:00Z"
    )

    def check(value: Any, where: str, out: Problems) -> None:
        match = pattern.fullmatch(value) if isinstance(value, str) else None
        if match is None or not _real_time(match.group(1), match.group(2)):
            out.append(f"{_at(where)}: must be {expected}, got {_short(value)}")

    return check


def _real_time(local: str, zone: str) -> bool:
    try:
        datetime.strptime(local, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return zone == "Z" or (int(zone[1:3]) < 24 and int(zone[4:6]) < 60)


def numeric_id(value: Any, where: str, out: Problems) -> None:
    """Check an id sent as a number or a string of digits (brand and user ids)."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.isdigit())
    ):
        out.append(f"{_at(where)}: must be a number, got {_kind(value)}")


def positive_int(value: Any, where: str, out: Problems) -> None:
    """Check a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        out.append(f"{_at(where)}: must be a positive integer, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- what the gateway sends to CXone ---------------------------------------------------


def _message_content(value: Any, where: str, out: Problems) -> None:
    obj(
        {
            "type": req(one_of(*MESSAGE_TYPES)),
            "payload": req(obj({}, extra=True)),
            "fallbackText": opt(string(empty=True)),
        }
    )(value, where, out)
    if isinstance(value, dict) and value.get("type") == "TEXT":
        payload = value.get("payload")
        if isinstance(payload, dict):
            if "text" in payload:
                string(empty=True)(payload["text"], f"{where}.payload.text", out)
            else:
                out.append(f"{where}.payload.text: required for type TEXT")


_RECIPIENT = obj(
    {
        "idOnExternalPlatform": req(string()),
        "name": opt(string(empty=True)),
        "isPrimary": opt(boolean),
        "isPrivate": opt(boolean),
    }
)

_CREATE_MESSAGE = obj(
    {
        "idOnExternalPlatform": req(string()),
        "thread": req(
            obj({"idOnExternalPlatform": req(string()), "threadName": opt(string(empty=True))})
        ),
        "messageContent": req(_message_content),
        "authorEndUserIdentity": req(
            obj(
                {
                    "idOnExternalPlatform": req(string()),
                    "firstName": opt(string(empty=True)),
                    "lastName": opt(string(empty=True)),
                    "nickname": opt(string(empty=True)),
                    "image": opt(string(empty=True)),
                    "customFields": opt(anything),
                }
            )
        ),
        "direction": req(one_of("inbound", "outbound")),
        "createdAtWithMilliseconds": req(timestamp(millis=True)),
        "attachments": opt(array(obj({"friendlyName": req(string()), "url": req(url)}))),
        "replyToMessage": opt(obj({"idOnExternalPlatform": req(string())})),
        "isReplyToSpecificMessage": opt(boolean),
        "title": opt(string(empty=True)),
        "url": opt(url),
        "recipients": opt(array(_RECIPIENT)),
        "externalAttributes": opt(
            array(obj({"key": req(string()), "value": req(string(empty=True))}))
        ),
        "contact": opt(obj({}, extra=True)),
    },
    hint=True,
)


def create_message(body: Any) -> Problems:
    """Check a create-message body against the spec's table 2.2."""
    problems = run(_CREATE_MESSAGE, body)
    if isinstance(body, dict):
        if body.get("isReplyToSpecificMessage") is True and "replyToMessage" not in body:
            problems.append("replyToMessage: required when isReplyToSpecificMessage is true")
        content = body.get("messageContent")
        payload = content.get("payload") if isinstance(content, dict) else None
        text = payload.get("text") if isinstance(payload, dict) else None
        if isinstance(text, str) and not text.strip() and not body.get("attachments"):
            problems.append("messageContent.payload.text: must not be empty without attachments")
    return problems


message_status = obj(
    {
        "status": req(one_of(*MESSAGE_STATUSES)),
        "updatedAt": req(timestamp(millis=False)),
        "reason": opt(string(empty=True)),
    },
    hint=True,
)

contact_status = obj({"status": req(one_of(*CONTACT_STATUSES))}, hint=True)

CHANNEL_FLAGS = (
    "hasAbilityToSendFiles",
    "hasOutboundFlow",
    "hasManualOutboundFlow",
    "canReplyToAnyMessage",
    "canSendSenderActions",
)

channel = obj(
    {
        "id": req(string()),
        "idOnExternalPlatform": req(string()),
        "channelIntegrationId": req(string()),
        "realExternalPlatformId": req(string()),
        "name": req(string()),
        "isPrivate": req(boolean),
        "hasTreeStructure": req(boolean),
        **{flag: opt(boolean) for flag in CHANNEL_FLAGS},
        "contentFormat": opt(one_of("plain", "html")),
    },
    hint=True,
)

one_time_token = obj(
    {
        "brandId": req(numeric_id),
        "userId": req(numeric_id),
        "token": req(string()),
        "purpose": req(one_of("channel-integration")),
    },
    hint=True,
)

# -- what the gateway answers CXone ----------------------------------------------------

_IDENTITY = obj({"idOnExternalPlatform": req(string())}, extra=True)

legacy_answer = obj({"idOnExternalPlatform": req(string())}, extra=True)

outbound_answer = obj(
    {
        "message": req(
            obj(
                {
                    "idOnExternalPlatform": req(string()),
                    "createdAtWithMilliseconds": req(timestamp(millis=True)),
                    "url": req(nullable(url)),
                },
                extra=True,
            )
        ),
        "thread": req(obj({"idOnExternalPlatform": req(string())}, extra=True)),
        "endUserIdentities": req(array(_IDENTITY)),
        "recipients": req(array(_IDENTITY)),
    },
    extra=True,
)


def _bearer_type(value: Any, where: str, out: Problems) -> None:
    if not isinstance(value, str) or value.lower() != "bearer":
        out.append(f"{_at(where)}: must be Bearer, got {_short(value)}")


token_answer = obj(
    {
        "access_token": req(string()),
        "token_type": req(_bearer_type),
        "expires_in": req(positive_int),
    },
    extra=True,
)

error_answer = obj({"error": req(string())}, extra=True)
