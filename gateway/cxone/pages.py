"""The integration's browser pages: Action URL, Reconnect URL, Remove URL.

CXone opens these in the admin's browser with `userId`, `brandId`, a one-time `token`
and `backUrl` (specs/cxone-byoc.md 1.5):

    GET  /integration/action             verify the token, start a session, 303 to the page
    GET  /integration/action/channels    the integration's channels, with create/remove
    POST /integration/action/channels    create | update | remove one channel (CSRF token)
    GET  /integration/reconnect          verify, upsert every declared channel, back to CXone
    GET  /integration/remove             verify, delete every declared channel, back to CXone

Decisions:

- The one-time token is verified with CXone (`POST /one-time-token/verification`),
  which proves the visitor is an admin CXone sent here. The `accessToken` CXone returns
  is not kept: channel calls use the gateway's own access key (`gw.cxone`), which
  already has token caching, the 401 refetch and error handling, and keeps a CXone
  bearer token out of cookies. The admin's authority is the verified token; the
  gateway's access key does the work.
- After verification the browser holds a short signed session cookie (HttpOnly,
  SameSite=Lax, Secure over https, 15 minutes; `gateway.websession`) naming brand,
  user and backUrl, and the token leaves the URL by a redirect, so reloading the page
  does not spend a used token. Forms carry a CSRF token bound to the session.
- `backUrl` is followed only when it is an absolute http(s) URL without credentials:
  it comes from the query string, so anything else (`javascript:`, `//evil`, relative
  paths) could turn the page into an open redirect or a script link. It is kept in the
  signed session, so it cannot be swapped after verification. In the sandbox it is the
  CXone simulator's `/_sim/back`.
- Reconnect and Remove act at once after verification: CXone has already asked the
  admin, and the one-time token cannot be minted by anyone else.
- Failed verifications are throttled per source (each one costs a call to CXone).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway import channels
from gateway.errors import GatewayError, UpstreamRejected
from gateway.html import client_source, external_url, read_form, redirect, render, secure_request
from gateway.keys import GATEWAY
from gateway.runtime import Gateway
from gateway.websession import SessionSigner, derive_key

log = logging.getLogger("gateway.admin.pages")

BASE = "/integration"
ACTION = f"{BASE}/action"
PAGE = f"{ACTION}/channels"
COOKIE = "byoc_action"
SESSION_SECONDS = 900.0
_MAX_LENGTH = {"userId": 64, "brandId": 64, "token": 1024}  # keeps the session cookie small
_DONE = {"create": "created", "update": "updated", "remove": "removed"}


def routes() -> list[web.RouteDef]:
    """The Action, Reconnect and Remove pages on the CXone-facing listener."""
    return [
        web.get(ACTION, action_entry),
        web.get(PAGE, channels_page),
        web.post(PAGE, channels_form),
        web.get(f"{BASE}/reconnect", reconnect),
        web.get(f"{BASE}/remove", remove),
    ]


def signer(gw: Gateway) -> SessionSigner:
    """The session signer; its key comes from the integrations' token signing keys."""
    keys = [i.token_signing_key.reveal() for i in gw.settings.integrations]
    return SessionSigner(derive_key("action-session", keys), SESSION_SECONDS, gw.clock)


def _message(
    title: str, message: str, *, status: int, tone: str = "bad", detail: str = "", back: str | None
) -> web.Response:
    return render(
        "message.html",
        status=status,
        title=title,
        message=message,
        tone=tone,
        detail=detail,
        back_url=back,
    )


async def _verify(request: web.Request) -> dict[str, Any] | web.Response:
    """Verify the visit's one-time token with CXone; return the visit or an error page."""
    gw = request.app[GATEWAY]
    q = request.query
    # no page before verification links to backUrl: anyone can craft such a link, and
    # a page of ours must not vouch for where it points
    params = {k: q.get(k, "") for k in ("userId", "brandId", "token")}
    if not all(params.values()) or any(len(v) > _MAX_LENGTH[k] for k, v in params.items()):
        return _message(
            "Open this page from CXone",
            "This page is opened by CXone with a one-time token; the link is incomplete.",
            status=400,
            back=None,
        )
    integration = q.get("integration") or None
    if integration is not None and all(i.name != integration for i in gw.settings.integrations):
        return _message("Unknown integration", "No such integration here.", status=404, back=None)
    source = "action:" + client_source(request)
    if gw.throttle.penalty(source) >= 1.0:
        return _message(
            "Too many attempts",
            "Too many links failed verification from here; wait a minute and try again.",
            status=429,
            back=None,
        )
    try:
        answer = await gw.cxone.verify_one_time_token(
            _as_id(params["brandId"]), _as_id(params["userId"]), params["token"]
        )
    except UpstreamRejected as exc:
        gw.throttle.failed(source)
        log.warning("one-time token refused by CXone (HTTP %s)", exc.status, extra=_ctx("refused"))
        return _message(
            "Link expired",
            "CXone did not accept this link: it has expired or was already used.",
            detail="Open the integration's page again from CXone.",
            status=403,
            back=None,
        )
    except GatewayError as exc:
        log.warning("one-time token not verified: %s", exc, extra=_ctx("unavailable"))
        return _message(
            "CXone unavailable",
            "The gateway could not reach CXone to verify this link.",
            detail="Try again in a moment.",
            status=502,
            back=None,
        )
    gw.throttle.succeeded(source)
    brand = _id_of(answer.get("brand")) or params["brandId"]
    user = _id_of(answer.get("user")) or params["userId"]
    log.info("admin visit verified (brand %s, user %s)", brand, user, extra=_ctx("verified"))
    back = external_url(q.get("backUrl"))
    return {"brand": brand, "user": user, "back": back, "integration": integration}


def _as_id(value: str) -> int | str:
    """CXone's brand and user ids are numbers: send digits as a JSON number."""
    return int(value) if value.isdigit() and len(value) <= 18 else value


def _id_of(value: Any) -> str | None:
    """The `id` of CXone's `brand` / `user` object, when it is a short scalar."""
    found = value.get("id") if isinstance(value, dict) else None
    if isinstance(found, str | int) and not isinstance(found, bool) and len(str(found)) <= 64:
        return str(found)
    return None


def _ctx(outcome: str, channel: str | None = None) -> dict[str, Any]:
    return {"route": "admin-pages", "outcome": outcome, "channel": channel}


async def action_entry(request: web.Request) -> web.StreamResponse:
    """GET /integration/action: verify, start the session, show the channels page."""
    visit = await _verify(request)
    if isinstance(visit, web.Response):
        return visit
    gw = request.app[GATEWAY]
    response = redirect(PAGE)
    response.set_cookie(
        COOKIE,
        signer(gw).issue(visit),
        max_age=int(SESSION_SECONDS),
        path=ACTION,
        httponly=True,
        samesite="Lax",
        secure=secure_request(request, gw.settings.cxone_listener.public_url),
    )
    return response


def _session(request: web.Request) -> tuple[SessionSigner, dict[str, Any]] | web.Response:
    s = signer(request.app[GATEWAY])
    session = s.verify(request.cookies.get(COOKIE))
    if session is None:
        return _message(
            "Session expired",
            "This page's session has ended.",
            detail="Open the integration's page again from CXone.",
            status=401,
            back=None,
        )
    return s, session


async def channels_page(request: web.Request) -> web.StreamResponse:
    """GET /integration/action/channels: the declared channels and their state in CXone."""
    found = _session(request)
    if isinstance(found, web.Response):
        return found
    s, session = found
    flash = None
    done, channel = request.query.get("done"), request.query.get("channel", "")
    if done in _DONE.values() and channel:
        flash = {"tone": "ok", "text": f"Channel {channel} {done}."}
    return await _page(request, s, session, flash)


async def _page(
    request: web.Request,
    s: SessionSigner,
    session: dict[str, Any],
    flash: dict[str, str] | None,
    status: int = 200,
) -> web.Response:
    gw = request.app[GATEWAY]
    declared = channels.declared_channels(gw.routing, session.get("integration"))
    try:
        states = await channels.channel_states(gw.cxone, declared)
    except GatewayError as exc:
        return _message(
            "CXone unavailable",
            "The gateway could not read the channel list from CXone.",
            detail=str(exc),
            status=502,
            back=session.get("back"),
        )
    return render(
        "action.html",
        status=status,
        states=states,
        csrf=s.csrf_token(session),
        form_action=PAGE,
        back_url=session.get("back"),
        brand_id=session["brand"],
        user_id=session["user"],
        flash=flash,
    )


async def channels_form(request: web.Request) -> web.StreamResponse:
    """POST /integration/action/channels: create, update or remove one channel."""
    found = _session(request)
    if isinstance(found, web.Response):
        return found
    s, session = found
    form = await read_form(request)
    if form is None:
        return _message("Bad request", "Not a form.", status=400, back=session.get("back"))
    if not s.check_csrf(session, form.get("csrf")):
        return _message(
            "Form expired",
            "This form does not belong to your session; reload the page and try again.",
            status=403,
            back=session.get("back"),
        )
    op, channel_id = form.get("op"), form.get("channel")
    if op not in _DONE or not isinstance(channel_id, str) or not channel_id:
        return _message("Bad request", "Unknown action.", status=400, back=session.get("back"))
    gw = request.app[GATEWAY]
    declared = channels.declared_channels(gw.routing, session.get("integration"))
    try:
        if op == "remove":
            states = await channels.channel_states(gw.cxone, declared)
            if channel_id not in {st.id for st in states if st.remote is not None}:
                return await _page(
                    request, s, session, _failed(channel_id, "CXone has no such channel"), 404
                )
            await channels.delete(gw.cxone, channel_id)
        else:
            target = next((d for d in declared if d.id == channel_id), None)
            if target is None:
                return await _page(
                    request, s, session, _failed(channel_id, "it is not declared here"), 404
                )
            await channels.upsert(gw.cxone, target)
    except GatewayError as exc:
        log.warning("channel %s failed: %s", op, exc, extra=_ctx("failed", channel_id))
        return await _page(request, s, session, _failed(channel_id, str(exc)), 502)
    log.info("channel %s by admin", _DONE[op], extra=_ctx(_DONE[op], channel_id))
    return redirect(f"{PAGE}?{urlencode({'done': _DONE[op], 'channel': channel_id})}")


def _failed(channel_id: str, why: str) -> dict[str, str]:
    return {"tone": "bad", "text": f"Channel {channel_id}: nothing changed, {why}."}


async def reconnect(request: web.Request) -> web.StreamResponse:
    """GET /integration/reconnect: send every declared channel to CXone again."""
    return await _all(request, "reconnect")


async def remove(request: web.Request) -> web.StreamResponse:
    """GET /integration/remove: delete every declared channel in CXone."""
    return await _all(request, "remove")


async def _all(request: web.Request, what: str) -> web.StreamResponse:
    visit = await _verify(request)
    if isinstance(visit, web.Response):
        return visit
    gw = request.app[GATEWAY]
    back = visit["back"]
    declared = channels.declared_channels(gw.routing, visit["integration"])
    done: list[str] = []
    try:
        for channel in declared:
            if what == "reconnect":
                await channels.upsert(gw.cxone, channel)
                done.append(channel.id)
            elif await channels.delete(gw.cxone, channel.id):
                done.append(channel.id)
    except GatewayError as exc:
        log.warning("%s failed: %s", what, exc, extra=_ctx("failed"))
        return _message(
            "Not finished",
            f"CXone refused or did not answer; {len(done)} of {len(declared)} channels done.",
            detail=str(exc),
            status=502,
            back=back,
        )
    outcome = "reconnected" if what == "reconnect" else "removed"
    log.info("%s %d channels", outcome, len(done), extra=_ctx(outcome))
    if back is not None:
        return redirect(back)
    return _message(
        "Done",
        f"{len(done)} channel(s) {outcome}. You can close this window.",
        status=200,
        tone="ok",
        back=None,
    )
