"""Typed application keys: the only way state is kept on the aiohttp apps."""

from __future__ import annotations

from aiohttp import web

from gateway.runtime import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
LISTENER = web.AppKey("listener", str)  # "cxone" or "platform"
