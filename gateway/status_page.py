"""The operator's status page (HTML) and its JSON form, on the CXone-facing listener.

    GET  /status           the page; without a session -> 303 /status/login
    GET  /status.json      the same data for scripts (Authorization: Bearer <admin token>)
    GET  /status/login     a form asking for the admin token
    POST /status/login     admin token + CSRF -> HttpOnly session cookie -> 303 /status
    POST /status/logout    CSRF -> the cookie is cleared

Both forms take the admin token (`admin_token` in gateway.yaml): a `Bearer` header, or
the session cookie the login form sets (signed with a key derived from the token, so
changing the token ends every session). Without an admin token everything here is 401.

Per channel: the mapping and its version, messages in and out, errors, dead letters;
then errors by route, the last reload, queue depth, dead letters and certificates.
Counters are this instance's since it started; queue and dead letters come from the
store, which every instance shares.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway import __version__, jsonutil
from gateway.admin import ADMIN_COOKIE, admin_session, admin_signer, require_admin
from gateway.delivery.jobs import InboundJob
from gateway.delivery.store import DeadLetter
from gateway.errors import GatewayError
from gateway.html import client_source, read_form, redirect, render, secure_request
from gateway.keys import GATEWAY
from gateway.runtime import Gateway

LOGIN = "/status/login"
LOGIN_COOKIE = "byoc_login"
_OK_OUTCOMES = frozenset({"accepted", "delivered", "sent"})  # any other outcome is an error
_DEAD_SCAN = 1000  # dead letters read to count them by route


def routes() -> list[web.RouteDef]:
    """The status page, its JSON form, login and logout."""
    return [
        web.get("/status", status_html),
        web.get("/status.json", status_json),
        web.get(LOGIN, login_form),
        web.post(LOGIN, login),
        web.post("/status/logout", logout),
    ]


# --- the data ---------------------------------------------------------------------------


def _counter(gw: Gateway, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """Yield (labels, value) of every series of a counter in the gateway's registry."""
    for family in gw.metrics.registry.collect():
        if family.name == name:
            for sample in family.samples:
                if sample.name == f"{name}_total":
                    yield sample.labels, sample.value


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dead_by_route(rows: Iterable[DeadLetter]) -> Counter[tuple[str, str, str]]:
    """Count dead letters by (mapping, channel role, route)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for dead in rows:
        mapping, _, rest = dead.thread_key.partition("\x1f")
        role = rest.partition("\x1f")[0]
        route = "?"
        try:
            call = InboundJob.decode(dead.payload).call
        except Exception:  # an undecodable payload still counts, as route "?"
            call = None
        if call is not None:
            role, route = call.channel, call.route
        counts[(mapping, role, route)] += 1
    return counts


async def collect(gw: Gateway) -> dict[str, Any]:
    """Gather everything the status page shows, as JSON-ready data."""
    routing = gw.routing
    try:
        depth: int | None = await gw.store.depth()
        dead: int | None = await gw.store.dead_count()
        dead_rows = await gw.store.dead_letters(_DEAD_SCAN)
        store = "ok"
    except GatewayError as exc:
        depth = dead = None
        dead_rows = []
        store = f"unavailable: {type(exc).__name__}"
    routes: list[dict[str, Any]] = sorted(
        (
            {**labels, "count": int(value)}
            for labels, value in _counter(gw, "byoc_messages")
            if value
        ),
        key=lambda r: (r["mapping"], r["channel"], r["route"], r["direction"], r["outcome"]),
    )
    errors = [r for r in routes if r["outcome"] not in _OK_OUTCOMES]
    dead_routes = _dead_by_route(dead_rows)
    channels = []
    for cid, (integ, binding) in routing.bindings.items():
        mapping = routing.mappings[binding.mapping]
        mine = [
            r for r in routes if r["mapping"] == binding.mapping and r["channel"] == binding.role
        ]
        spec = mapping.channels.get(binding.role)
        channels.append(
            {
                "id": cid,
                "name": binding.name or (spec.cxone.get("name") if spec else None) or cid,
                "integration": integ.name,
                "mapping": binding.mapping,
                "role": binding.role,
                "mapping_version": mapping.version,
                "mapping_file": mapping.source,
                "messages_in": sum(
                    r["count"]
                    for r in mine
                    if r["direction"] == "inbound" and r["outcome"] == "delivered"
                ),
                "messages_out": sum(
                    r["count"]
                    for r in mine
                    if r["direction"] == "outbound" and r["outcome"] == "sent"
                ),
                "errors": sum(r["count"] for r in mine if r["outcome"] not in _OK_OUTCOMES),
                "dead_letters": sum(
                    n
                    for (m, role, _), n in dead_routes.items()
                    if m == binding.mapping and role == binding.role
                ),
            }
        )
    last = gw.last_reload.as_dict() if gw.last_reload else None
    if last is not None:
        last["at_iso"] = _iso(last.get("at"))
    try:
        refreshes: int | None = gw.cxone.auth.refresh_count
    except AttributeError:  # clients not started yet
        refreshes = None
    return {
        "generated_at": _iso(time.time()),
        "gateway": {
            "version": __version__,
            "instance": gw.workers.owner if gw.workers is not None else None,
        },
        "routing": routing.describe(),
        "last_reload": last,
        "store": store,
        "queue_depth": depth,
        "dead_letters": dead,
        "channels": channels,
        "routes": routes,
        "errors_by_route": errors,
        "dead_letters_by_route": [
            {"mapping": m, "channel": role, "route": route, "count": n}
            for (m, role, route), n in sorted(dead_routes.items())
        ],
        # every certificate in use, as of the last check (startup, reload, hourly)
        "certificates": gw.certificates.describe() if gw.certificates is not None else None,
        "cxone": {"token_refreshes": refreshes},
    }


# --- handlers ---------------------------------------------------------------------------


async def status_json(request: web.Request) -> web.Response:
    """GET /status.json: the status data for scripts."""
    require_admin(request)
    body = await collect(request.app[GATEWAY])
    return web.Response(
        body=jsonutil.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def status_html(request: web.Request) -> web.StreamResponse:
    """GET /status: the page (a Bearer header works too; a browser gets the login form)."""
    if request.headers.get("Authorization"):
        require_admin(request)
        session = None
    else:
        session = admin_session(request)
        if session is None:
            return redirect(LOGIN)
    gw = request.app[GATEWAY]
    data = await collect(gw)
    csrf = admin_signer(gw).csrf_token(session) if session is not None else None
    return render("status.html", data=data, csrf=csrf)


def _closed() -> web.Response:
    return render(
        "message.html",
        status=401,
        title="Status page closed",
        message="No admin token is configured (admin_token in gateway.yaml).",
        tone="bad",
        detail="",
        back_url=None,
    )


async def login_form(request: web.Request) -> web.StreamResponse:
    """GET /status/login: ask for the admin token."""
    return _login_page(request, status=200, error=None)


def _login_page(request: web.Request, *, status: int, error: str | None) -> web.Response:
    gw = request.app[GATEWAY]
    if gw.settings.admin_token is None:
        return _closed()
    nonce = secrets.token_urlsafe(18)
    response = render("login.html", status=status, csrf=nonce, error=error, action=LOGIN)
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=1800,
        path=LOGIN,
        httponly=True,
        samesite="Strict",
        secure=secure_request(request, gw.settings.cxone_listener.public_url),
    )
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """POST /status/login: check the admin token and start a session."""
    gw = request.app[GATEWAY]
    token = gw.settings.admin_token
    if token is None:
        return _closed()
    form = await read_form(request)
    if form is None:
        return _login_page(request, status=400, error="That was not the login form.")
    given_csrf, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")
    if not (
        isinstance(given_csrf, str)
        and cookie
        and hmac.compare_digest(given_csrf.encode(), cookie.encode())
    ):
        return _login_page(request, status=403, error="The form expired; please try again.")
    source = "status-login:" + client_source(request)
    if gw.throttle.penalty(source) >= 1.0:
        return _login_page(request, status=429, error="Too many attempts; wait a minute.")
    given = form.get("token")
    if not isinstance(given, str) or not given or not token.matches(given):
        gw.throttle.failed(source)
        return _login_page(request, status=401, error="That is not the admin token.")
    gw.throttle.succeeded(source)
    response = redirect("/status")
    response.set_cookie(
        ADMIN_COOKIE,
        admin_signer(gw).issue({"who": "admin"}),
        max_age=int(admin_signer(gw).ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure_request(request, gw.settings.cxone_listener.public_url),
    )
    response.del_cookie(LOGIN_COOKIE, path=LOGIN)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /status/logout: end the session."""
    gw = request.app[GATEWAY]
    session = admin_session(request)
    form = await read_form(request) or {}
    if session is not None and not admin_signer(gw).check_csrf(session, form.get("csrf")):
        return redirect("/status")
    response = redirect(LOGIN)
    response.del_cookie(ADMIN_COOKIE, path="/")
    return response
