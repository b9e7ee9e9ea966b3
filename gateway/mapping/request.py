"""Render one platform request from a route's `request:` template and the platform's auth."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlencode, urlsplit

from gateway import jsonutil
from gateway.mapping.loader import Problems
from gateway.mapping.model import AuthSpec, PlatformRequest, PlatformSpec
from gateway.mapping.templates import OMIT, Node, RenderError, compile_template, render_text
from gateway.mapping.values import escape_pointer, to_str, type_name

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

    def render(
        self,
        platform: PlatformSpec,
        context: Mapping[str, Any],
        auth_origins: frozenset[tuple[str, str]] = frozenset(),
    ) -> PlatformRequest:
        """Render; raise RenderError naming the part that failed.

        The platform's auth goes to base_url's origin, and to `auth_origins` (scheme, host)
        when a mapping names other hosts of the platform (its file host, for media).
        """
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
            same_origin = origin_of(url) in {origin_of(base), *auth_origins}
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


def origin_of(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a URL, lower-case."""
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


def compile_request(spec: Mapping[str, Any], where: str, problems: Problems) -> RequestTemplate:
    """Compile a `request:` (path or url, query, headers, body) of a route."""
    if ("path" in spec) == ("url" in spec):
        problems.add(
            where,
            "a request needs exactly one of `path` (joined to "
            "platform.base_url) or `url` (absolute)",
            "keep one of them",
        )
    body_format = cast(BodyFormat, spec.get("body_format", "json"))
    body = None
    if "body" in spec:
        if body_format == "text" and not isinstance(spec["body"], str):
            problems.add(
                f"{where}/body",
                "with body_format: text the body must be a text template",
                "write the body as one string",
            )
        body = compile_template(
            spec["body"],
            f"{where}/body",
            problems.add,
            mode="text" if body_format == "text" else "native",
            label="request.body",
        )
    headers = []
    for name, value in (spec.get("headers") or {}).items():
        pointer = f"{where}/headers/{escape_pointer(name)}"
        if not name or any(c in name for c in " :\r\n\t"):
            problems.add(pointer, f"{name!r} is not a valid header name", "")
        headers.append(
            (
                name,
                compile_template(
                    value, pointer, problems.add, mode="text", label=f"request.headers.{name}"
                ),
            )
        )
    return RequestTemplate(
        method=compile_template(
            spec.get("method", "POST"),
            f"{where}/method",
            problems.add,
            mode="text",
            label="request.method",
        ),
        path=compile_template(
            spec["path"], f"{where}/path", problems.add, mode="path", label="request.path"
        )
        if "path" in spec
        else None,
        url=compile_template(
            spec["url"], f"{where}/url", problems.add, mode="path", label="request.url"
        )
        if "url" in spec
        else None,
        query=compile_template(spec["query"], f"{where}/query", problems.add, label="request.query")
        if "query" in spec
        else None,
        headers=tuple(headers),
        body=body,
        body_format=body_format,
    )
