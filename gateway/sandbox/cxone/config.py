"""How one simulated CXone tenant is set up."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.clock import Clock, system_clock

# Names of the CXone-side routes, for failure injection (`script`, `reset_next`, `hold`).
ROUTES: tuple[str, ...] = (
    "discovery",  # GET /.well-known/openid-configuration
    "cxone_configuration",  # GET /.well-known/cxone-configuration
    "token",  # POST /auth/token
    "create_message",  # POST /dfo/3.0/channels/{channelId}/messages
    "message_status",  # PUT  /dfo/3.0/channels/{channelId}/messages/{id}/status
    "contact_status",  # PUT  /dfo/3.0/contacts/{contactNumber}/status
    "contact_abandon",  # POST /dfo/3.0/contacts/{contactNumber}/abandon
    "channel_upsert",  # POST /dfo/3.0/channels
    "channel_list",  # GET  /dfo/3.0/channels
    "channel_delete",  # DELETE /dfo/3.0/channels/{channelId}
    "one_time_token",  # POST /dfo/3.0/one-time-token/verification
)

ClientAuth = Literal["json", "form", "basic"]


@dataclass(frozen=True)
class CxoneSimConfig:
    """Credentials, ids, clock and gateway coordinates of a simulated tenant."""

    tenant_id: str = "11ef0000-5a4d-4c1e-9000-00000000c1de"
    # the access key the gateway authenticates with (grant_type=password)
    access_key_id: str = "sim-access-key-id"
    access_key_secret: str = "sim-access-key-secret"
    # the registered app's client credentials (HTTP Basic on the token endpoint)
    app_client_id: str = "sim-app-client-id"
    app_client_secret: str = "sim-app-client-secret"
    require_client_auth: bool = True
    token_ttl: int = 3600
    # HS256 key of the id_token; 32 bytes or more, or PyJWT warns
    id_token_key: str = "cxone-sim-id-token-signing-key-0123456789"
    brand_id: int | str = 4599
    agent_user_id: int | str = 1201
    agent_first_name: str = "Ada"
    agent_surname: str = "Agent"
    # when set, channel upserts must name this channelIntegrationId
    integration_id: str | None = None
    # pre-registered channels: an id, or a (partial) channel body holding `id`
    channels: tuple[str | Mapping[str, Any], ...] = ()
    # when true, a status for a message id the sim never saw answers 404
    strict_status_ids: bool = False
    one_time_token_ttl: float = 300.0
    clock: Clock = system_clock
    # the sim's own base URL; None: derived from each request's Host
    base_url: str | None = None
    # the gateway as CXone knows it (agent side)
    gateway_box_url: str | None = None  # e.g. http://127.0.0.1:8081/integration/box
    gateway_token_url: str | None = None  # default <box>/1.0/token
    gateway_client_id: str | None = None
    gateway_client_secret: str | None = None
    # how the token request carries the client credentials: a JSON body as seen, or
    # form / HTTP Basic per RFC 6749
    gateway_client_auth: ClientAuth = "json"
    # TLS towards the gateway: a client context trusting its CA and, for mTLS, holding
    # the client certificate CXone presents; None: the system's CAs, no certificate
    gateway_ssl: ssl.SSLContext | None = field(default=None, compare=False)
    gateway_connect_timeout: float = 5.0
    gateway_timeout: float = 30.0
    long_poll_seconds: float = 25.0
    max_log: int = 500  # violations and route hits kept for the state page
