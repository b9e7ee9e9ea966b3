"""A faithful simulator of The Watering Hole (shared/specs/watering-hole.md).

    sim = WateringHoleSim(WateringHoleConfig(clock=FakeClock(), webhook_url=...))
    server = await aiohttp_server(sim.app)     # REST API under /v1, control API under /_sim/

Customers act through async methods (`user_sends_dm`, `user_posts`, `user_comments`,
`message_delivered` / `message_read` / `message_failed`, `close_conversation`,
`emit_unknown`); each queues an event. The brand acts through the REST API, whose
messages and comments come back as echo events. `await sim.flush()` sends the queue as
signed deliveries of at most `batch_max` events; a failed delivery waits on the
injected clock for `await sim.run_due_retries()` (same delivery and event ids,
attempt + 1) and is dropped after the schedule. `auto_deliver` (or `set_auto(True)`)
does both in a background task. Everything is recorded: `sim.api_calls`,
`sim.deliveries`, `sim.world`; `await sim.wait_for(predicate)` waits without sleeping.
Faults: `fail_next`, `reset_next`, `hold_next`.

Module map: config (frozen settings, seeded users), state (users, conversations, posts,
events), webhooks (sign, batch, send, retry, handshake), guards (request records, fault
injection, rate limit, idempotency), api (`/v1`), control (`/_sim/`), sim (the facade),
standalone (serve it alone).
"""

from __future__ import annotations

from gateway.sandbox.watering_hole.config import DEFAULT_USERS, UserSeed, WateringHoleConfig
from gateway.sandbox.watering_hole.guards import ApiCall, Hold
from gateway.sandbox.watering_hole.records import SimError, new_id
from gateway.sandbox.watering_hole.sim import WateringHoleSim
from gateway.sandbox.watering_hole.standalone import config_from_env, run_standalone
from gateway.sandbox.watering_hole.webhooks import (
    SIGNATURE_HEADER,
    Delivery,
    DeliveryAttempt,
    signature_header,
)

__all__ = [
    "DEFAULT_USERS",
    "SIGNATURE_HEADER",
    "ApiCall",
    "Delivery",
    "DeliveryAttempt",
    "Hold",
    "SimError",
    "UserSeed",
    "WateringHoleConfig",
    "WateringHoleSim",
    "config_from_env",
    "new_id",
    "run_standalone",
    "signature_header",
]
