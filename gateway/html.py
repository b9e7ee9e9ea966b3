"""Server-rendered HTML for the browser pages: one autoescaping jinja2 environment.

Templates live in `gateway/cxone/templates/`. Every value is escaped (autoescape on for
every template, undefined names are errors), no page runs JavaScript, and every
response carries a strict Content-Security-Policy whose only allowance is the page's
own `<style>` block, by nonce.
"""

from __future__ import annotations

import functools
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
from aiohttp import web

from gateway import __version__
from gateway.client_address import client_ip
from gateway.edge import read_body_limited
from gateway.keys import GATEWAY

MAX_FORM_BYTES = 16_384
MAX_FORM_FIELDS = 20
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@functools.cache
def environment() -> jinja2.Environment:
    """Return the shared template environment (built on first use, not at import)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.cxone", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["version"] = __version__
    return env


def render(
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """Render a template into an HTML response with the security headers."""
    nonce = secrets.token_urlsafe(16)
    text = environment().get_template(template).render(nonce=nonce, **context)
    response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    if headers:
        response.headers.update(headers)
    return response


def redirect(location: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """A 303 See Other to `location` (after a form POST, or back to CXone)."""
    response = web.Response(status=303, headers={"Location": location})
    response.headers.update(SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def external_url(value: str | None) -> str | None:
    """Return `value` when it is an absolute http(s) URL safe to link or redirect to.

    Anything else (relative, `javascript:`, `data:`, scheme-relative `//host`, with
    credentials, with control characters or whitespace) gives None.
    """
    if not value or len(value) > 2048:
        return None
    if any(ch.isspace() or not ch.isprintable() or ch == "\\" for ch in value):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a malformed port
    except ValueError:
        return None
    del port
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return value


def client_source(request: web.Request) -> str:
    """The caller's address for throttling (X-Forwarded-For only from trusted proxies)."""
    proxies = request.app[GATEWAY].settings.cxone_listener.trusted_proxies
    return str(client_ip(request, proxies) or request.remote or "?")


def secure_request(request: web.Request, public_url: str | None) -> bool:
    """Tell whether cookies for this request should be `Secure`."""
    return request.secure or bool(public_url and public_url.lower().startswith("https://"))


async def read_form(request: web.Request) -> dict[str, str] | None:
    """Parse one of the pages' small url-encoded forms; None when the body is not one.

    The pages only post `application/x-www-form-urlencoded`; anything else (multipart,
    junk bytes, not UTF-8, too many fields) is refused here rather than parsed. More
    than MAX_FORM_BYTES is a 413, like every other body limit.
    """
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    raw = await read_body_limited(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)
