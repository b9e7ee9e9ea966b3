"""What inline tests use instead of the network: canned platform answers, fixed files.

Inline tests run with no I/O, so the coroutines that render an inbound message with
lookups, or upload outbound attachments, are driven to their end without an event loop
(`run_offline`): the doubles below answer at once, and anything that would really wait
is a bug.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from gateway.errors import UpstreamUnavailable
from gateway.mapping.model import FetchedFile, PlatformRequest, PlatformResponse
from gateway.mapping.values import guess_content_type, to_str

T = TypeVar("T")
MEDIA_BASE = "https://media.test/"


def run_offline(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its I/O is canned) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("an inline test tried to wait for I/O")


def response_of(spec: Mapping[str, Any]) -> PlatformResponse:
    """A platform answer written in a test (`{status, headers, body}`)."""
    return PlatformResponse(spec["status"], dict(spec.get("headers") or {}), spec.get("body"))


class CannedLookups:
    """Answers each lookup with the test's `lookups.<name>`; a lookup without one fails."""

    def __init__(self, mapping: str, answers: Mapping[str, Any]) -> None:
        self.mapping = mapping
        self.answers = answers

    async def cached(self, key: str) -> Any | None:
        return None

    async def remember(self, key: str, value: Any, ttl: float) -> None:
        return None

    async def send(self, lookup: str, request: PlatformRequest, within: float) -> PlatformResponse:
        if lookup not in self.answers:
            raise UpstreamUnavailable(self.mapping, "the test gives no answer for this lookup")
        return response_of(self.answers[lookup])

    def media_url(self, fields: Mapping[str, Any]) -> str:
        """`https://media.test/<mapping>?<the fields as a query>`: readable in expectations."""
        query = urlencode([(k, to_str(v) or "") for k, v in sorted(fields.items())])
        return f"{MEDIA_BASE}{self.mapping}?{query}"


class CannedUploads:
    """Gives every attachment a small text file; answers uploads with the test's answers."""

    def __init__(self, mapping: str, answers: Sequence[Mapping[str, Any]]) -> None:
        self.mapping = mapping
        self.answers = answers
        self.sent: list[PlatformRequest] = []

    async def fetch(self, url: str, max_bytes: int, within: float) -> FetchedFile:
        kind = guess_content_type(url) or "application/octet-stream"
        return FetchedFile(f"<the file at {url}>".encode(), kind)

    async def send(self, request: PlatformRequest, index: int, within: float) -> PlatformResponse:
        self.sent.append(request)
        if not self.answers:
            raise UpstreamUnavailable(self.mapping, "the test gives no upload_responses")
        return response_of(self.answers[min(index, len(self.answers) - 1)])
