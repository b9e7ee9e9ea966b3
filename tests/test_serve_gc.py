"""The serving process's garbage collector (gateway.runtime.young_collections_less_often).

A real `byoc-gateway serve` child with the SQLite store takes deliveries of 100 events
(each one batch of operations alive until its commit); its `/metrics` counts the
garbage collections by generation (prometheus_client's GC collector).
"""

from __future__ import annotations

from pathlib import Path

from tests.procs import GatewayProcess, Load, metric, start_sims, write_node_config


async def test_batches_of_events_start_no_young_collection_in_the_serving_process(
    tmp_path: Path,
) -> None:
    async with start_sims(users=20) as sims:
        node = write_node_config(
            tmp_path / "node", wh_url=sims.wh_url, cxone_url=sims.cxone_url, backend="sqlite"
        )
        gw = GatewayProcess(node)
        try:
            await gw.start_ready()
            load = Load(sims)
            await load.send(200, webhook_urls=[gw.webhook_url])  # warm: pools, caches
            await load.wait_delivered()
            before = await metric(gw.cxone_url, "python_gc_collections_total", generation="0")
            await load.send(1_000, webhook_urls=[gw.webhook_url])
            await load.wait_delivered()
            after = await metric(gw.cxone_url, "python_gc_collections_total", generation="0")
            assert load.report().lost == []
            # CPython's default threshold (700) collected the young generation several
            # times per delivery of 100 here; what requests and batches allocate they free
            assert after - before == 0, gw.log_tail()
            assert await metric(gw.cxone_url, "process_resident_memory_bytes") > 0
        finally:
            gw.stop()
