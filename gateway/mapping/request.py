"""Render one platform request from a route's `request:` template and the platform's auth."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from gateway import jsonutil
from gateway.mapping.model import AuthSpec, PlatformRequest, PlatformSpec
from gateway.mapping.templates import OMIT, Node, RenderError, render_text
from gateway.mapping.values import to_str, type_name

BodyFormat = Literal["json", "form", "text"]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_CONTENT_TYPES = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "text": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class RequestTemplate:
    """A compiled `request:`: exactly one of path (joined to base_url) or url."""

    method: Node  # a constant, or a text template giving one of METHODS
    path: Node | None
    url: Node | None
    query: Node | None
    headers: tuple[tuple[str, Node], ...]
    body: Node | None
    body_format: BodyFormat

    def render(self, platform: PlatformSpec, context: Mapping[str, Any]) -> PlatformRequest:
        """Render; raise RenderError naming the part that failed."""
        method = render_text(self.method, context).strip().upper()
        if method not in METHODS:
            raise RenderError(
                f"request.method rendered to {method[:20]!r}; it must give one "
                f"of {', '.join(METHODS)}"
            )
        base = platform.base_url.rstrip("/")
        if self.url is not None:
            url = render_text(self.url, context)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise RenderError("request.url rendered to a value that is not an http(s) URL")
            same_origin = _origin(url) == _origin(base)
        else:
            assert self.path is not None
            url = base + render_text(self.path, context)
            same_origin = True
        query = _query(self.query.render(context)) if self.query is not None else []
        headers: dict[str, str] = {}
        body: bytes | None = None
        if self.body is not None:
            body = self._body(context)
            if body is not None:
                headers["Content-Type"] = _CONTENT_TYPES[self.body_format]
        headers.update(platform.headers)
        for name, node in self.headers:
            value = node.render(context)
            if value is OMIT or value is None:
                continue
            text = value if isinstance(value, str) else to_str(value) or ""
            if "\r" in text or "\n" in text:
                raise RenderError(
                    f"request.headers.{name}: a header value may not hold a line break"
                )
            headers[name] = text
        masked: tuple[str, ...] = ()
        if platform.auth is not None and same_origin:
            masked = _apply_auth(platform.auth, headers, query)
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        return PlatformRequest(method, url, headers, body, masked)

    def _body(self, context: Mapping[str, Any]) -> bytes | None:
        assert self.body is not None
        if self.body_format == "text":
            return render_text(self.body, context).encode()
        tree = self.body.render(context)
        if tree is OMIT:
            return None
        if self.body_format == "json":
            return jsonutil.dumps(tree)
        if not isinstance(tree, dict):
            raise RenderError(f"request.body: a form body must be a mapping, not {type_name(tree)}")
        return urlencode(_query(tree)).encode()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _query(tree: Any) -> list[tuple[str, str]]:
    if tree is OMIT or tree is None:
        return []
    if not isinstance(tree, dict):
        raise RenderError(f"request.query must be a mapping, not {type_name(tree)}")
    pairs: list[tuple[str, str]] = []
    for key, value in tree.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None or item is OMIT:
                continue
            if isinstance(item, dict | list):
                raise RenderError(
                    f"request.query.{key}: a query value must be text or a "
                    f"number, not {type_name(item)}"
                )
            pairs.append((key, to_str(item) or ""))
    return pairs


def _apply_auth(
    auth: AuthSpec, headers: dict[str, str], query: list[tuple[str, str]]
) -> tuple[str, ...]:
    if auth.kind == "bearer":
        headers["Authorization"] = f"Bearer {auth.value.reveal()}"
        return ("Authorization",)
    if auth.kind == "basic":
        user = auth.username.reveal() if auth.username else ""
        token = base64.b64encode(f"{user}:{auth.value.reveal()}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        return ("Authorization",)
    if auth.kind == "header":
        headers[auth.name] = auth.value.reveal()
        return (auth.name,)
    query.append((auth.name, auth.value.reveal()))
    return (auth.name,)
