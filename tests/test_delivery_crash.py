"""A gateway SIGKILLed in the middle of a load, restarted: nothing accepted is lost.

The gateway runs as a real `byoc-gateway serve` child on the sqlite store; the
simulators run here. 3,000 DMs over 30 conversations arrive as 30 signed deliveries of
100 events. When CXone has about a third of them, the child is killed without warning,
then started again on the same gateway.yaml. The platform retries the deliveries that
failed meanwhile (same event ids: the dedupe keys drop what was already accepted).

What is asserted, counting what CXone received:
- every message sent reaches CXone (nothing accepted lost, nothing refused lost either,
  since the platform retries whatever was not acknowledged);
- per conversation, the first arrivals are in the order the customers wrote;
- a message reaches CXone twice only if it was in flight at the kill (CXone had it, the
  gateway had not recorded it yet): at most one per worker, each a repeat of the same
  idOnExternalPlatform that CXone's own dedupe absorbs;
- the restarted gateway drains the queue and exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.procs import GatewayProcess, Load, start_sims, write_node_config

MESSAGES = 3_000
WORKERS = 8


async def test_sigkill_mid_load_then_restart_loses_nothing(tmp_path: Path) -> None:
    async with start_sims(users=30) as sims:
        node = write_node_config(
            tmp_path / "node",
            wh_url=sims.wh_url,
            cxone_url=sims.cxone_url,
            backend="sqlite",
            workers=WORKERS,
            lease_seconds=5,  # a dead process's leases run out quickly...
            cxone_timeouts={"connect": 1, "read": 3, "total": 4},  # ...yet outlive any call
        )
        gw = GatewayProcess(node)
        try:
            await gw.start_ready()
            load = Load(sims)
            sending = asyncio.create_task(load.send(MESSAGES, webhook_urls=[gw.webhook_url]))
            # mid-intake (half of the deliveries made) and mid-delivery (CXone has some)
            await sims.wh.wait_for(lambda: len(sims.wh.deliveries) >= 15, timeout=30)
            await load.wait_delivered(1)
            gw.kill()
            await sending  # deliveries to the dead gateway fail and are retried later
            # what the dead process managed to send (requests it wrote before dying included)
            before_restart = {m.message_id for m in sims.cxone.messages}

            await gw.start_ready()
            await load.redeliver(gw.webhook_url)
            await load.wait_delivered(timeout=90)

            report = load.report()
            assert report.sent == MESSAGES
            assert report.lost == []
            assert report.out_of_order == []
            assert load.accepted_as_sent() or load.accepted_order()[1]
            assert len(report.duplicates) <= WORKERS, report.duplicates
            assert set(report.duplicates) <= before_restart  # only what was in flight
            assert not [d for d in sims.wh.dropped_deliveries]
            assert await gw.terminate() == 0
        finally:
            gw.stop()
        log = gw.log_text()
        assert "Traceback" not in log, gw.log_tail()
        with sqlite3.connect(node.settings.store.path) as db:
            assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM dead").fetchone() == (0,)
