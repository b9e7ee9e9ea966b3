"""A simulated NICE CXone tenant, as the BYOC gateway sees it.

`CxoneSim(CxoneSimConfig(...))` owns an aiohttp app (`sim.app`) and plays both roles:

Server (what the gateway calls; routes named for failure injection, see `ROUTES`):

    GET  /.well-known/openid-configuration           discovery   {issuer, token_endpoint}
    GET  /.well-known/cxone-configuration?tenantId=  cxone_configuration  {api_endpoint}
    POST /auth/token   form grant_type=password, app client as Basic   token
    POST /dfo/3.0/channels/{channelId}/messages                   create_message
    PUT  /dfo/3.0/channels/{channelId}/messages/{id}/status       message_status
    PUT  /dfo/3.0/contacts/{contactNumber}/status                 contact_status
    POST /dfo/3.0/contacts/{contactNumber}/abandon                contact_abandon
    POST /dfo/3.0/channels | GET /dfo/3.0/channels | DELETE .../{channelId}
                                        channel_upsert | channel_list | channel_delete
    POST /dfo/3.0/one-time-token/verification                     one_time_token

Bodies are validated strictly (every problem listed in the 400); DFO calls need a
bearer token from /auth/token (401 when missing, unknown or expired by the clock).

Client (what CXone sends the gateway): `agent_reply`, `agent_typing`,
`agent_proactive` call the gateway's integration box with CXone's lazy token dance
(401 -> fetch token -> retry once) and check the answers against the contract.

Tests: `script`, `reset_next`, `hold`/`release` inject failures; `await sim.wait_for(...)`
waits for a change without sleeping; `messages`, `deliveries`, `statuses`,
`violations`, `gateway_calls` ... tell what happened. The control API under /_sim/ (see
`gateway.sandbox.cxone.control`) serves the sandbox page; `run_standalone` serves it all.
"""

from __future__ import annotations

from gateway.sandbox.cxone.agent import AgentResult, ProactiveResult
from gateway.sandbox.cxone.config import ROUTES, CxoneSimConfig
from gateway.sandbox.cxone.records import (
    Contact,
    ContactChange,
    Entry,
    GatewayCall,
    ReceivedMessage,
    StatusUpdate,
    Thread,
    Violation,
)
from gateway.sandbox.cxone.sim import CxoneSim, run_standalone

__all__ = [
    "ROUTES",
    "AgentResult",
    "Contact",
    "ContactChange",
    "CxoneSim",
    "CxoneSimConfig",
    "Entry",
    "GatewayCall",
    "ProactiveResult",
    "ReceivedMessage",
    "StatusUpdate",
    "Thread",
    "Violation",
    "run_standalone",
]
