"""Graceful shutdown: SIGTERM mid-load stops intake, finishes in-flight work, loses nothing.

A real `byoc-gateway serve` child on sqlite gets SIGTERM while it is accepting and
delivering. It must exit 0 by itself; deliveries the platform makes meanwhile are
refused (and retried by the platform later); after a restart everything arrives. As
no job is abandoned mid-call, CXone gets no repeat at all (unlike after a SIGKILL).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

from tests.procs import GatewayProcess, Load, start_sims, write_node_config


async def test_sigterm_mid_load_finishes_in_flight_work_and_loses_nothing(
    tmp_path: Path,
) -> None:
    async with start_sims(users=20) as sims:
        node = write_node_config(
            tmp_path / "node",
            wh_url=sims.wh_url,
            cxone_url=sims.cxone_url,
            backend="sqlite",
            workers=8,
        )
        gw = GatewayProcess(node)
        try:
            await gw.start_ready()
            load = Load(sims)
            sending = asyncio.create_task(load.send(1_500, webhook_urls=[gw.webhook_url]))
            await sims.wh.wait_for(lambda: len(sims.wh.deliveries) >= 5, timeout=30)
            await load.wait_delivered(1)
            assert await gw.terminate() == 0
            await sending
            assert load.delivered_count() < 1_500  # it really stopped in the middle

            await gw.start_ready()
            await load.redeliver(gw.webhook_url)
            await load.wait_delivered(timeout=60)
            report = load.report()
            assert (report.lost, report.duplicates, report.out_of_order) == ([], [], [])
            assert await gw.terminate(sig=signal.SIGINT) == 0  # Ctrl-C stops gracefully too
        finally:
            gw.stop()
        log = gw.log_text()
        assert "Traceback" not in log, gw.log_tail()
        assert log.count("shutting down") == 2
        with sqlite3.connect(node.settings.store.path) as db:
            assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM threads").fetchone() == (0,)
