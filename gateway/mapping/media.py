"""The mapping's `media:` section: how the gateway fetches a platform file for CXone.

A route turns a platform file into a URL CXone can fetch with `media_url(...)`; the
gateway signs that URL (gateway.media) and, when CXone fetches it, renders
`media.request` with the fields given to `media_url` and streams the platform's answer
with the platform's credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import MappingRuntimeError
from gateway.mapping.loader import Problems
from gateway.mapping.model import PlatformRequest, PlatformSpec
from gateway.mapping.request import RequestTemplate, compile_request, origin_of
from gateway.mapping.templates import RenderError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class MediaSpec:
    """A compiled `media:` section."""

    request: RequestTemplate
    ttl: float  # seconds a signed URL stays valid
    max_bytes: int
    timeout: float  # seconds for one whole download
    auth_origins: frozenset[tuple[str, str]]  # besides base_url's, hosts that get the auth

    def fetch_request(
        self,
        mapping: str,
        platform: PlatformSpec,
        fields: Mapping[str, Any],
        variables: Mapping[str, Any],
    ) -> PlatformRequest:
        """The platform request that fetches one file (MappingRuntimeError on failure)."""
        try:
            return self.request.render(
                platform, {**fields, "vars": variables}, auth_origins=self.auth_origins
            )
        except RenderError as exc:
            raise MappingRuntimeError(mapping, "(media)", str(exc)) from None


def compile_media(spec: Mapping[str, Any], problems: Problems) -> MediaSpec:
    """Compile `media: {request, ttl, max_bytes, timeout, auth_origins}`."""
    origins = set()
    for index, origin in enumerate(spec.get("auth_origins") or ()):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            problems.add(
                f"/media/auth_origins/{index}",
                f"{origin!r} is not an origin (scheme and host, no path)",
                "write e.g. https://files.example.com",
            )
            continue
        origins.add(origin_of(origin))
    return MediaSpec(
        request=compile_request({"method": "GET", **spec["request"]}, "/media/request", problems),
        ttl=float(spec["ttl"]),
        max_bytes=int(spec.get("max_bytes", DEFAULT_MAX_BYTES)),
        timeout=float(spec.get("timeout", DEFAULT_TIMEOUT)),
        auth_origins=frozenset(origins),
    )
