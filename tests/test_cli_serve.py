"""Issue 2: `byoc-gateway serve` fails closed on a missing secret, with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.procs import GatewayProcess, write_node_config

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_secret_stops_startup_naming_it() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CXONE_", "BYOC_", "WH_", "WATERING_"))
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", "gateway.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert (
        "gateway.yaml:21 at /cxone/auth/access_key_id: environment variable CXONE_ACCESS_KEY_ID is not set"
        in done.stderr
    )
    assert "BYOC_TOKEN_SIGNING_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_mapping_secret_stops_startup_naming_file_and_place(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CXONE_", "BYOC_", "WH_", "WATERING_"))
    }
    env.update(
        CXONE_ACCESS_KEY_ID="id",
        CXONE_ACCESS_KEY_SECRET="secret",
        BYOC_CLIENT_ID="client",
        BYOC_CLIENT_SECRET="client-secret",
        BYOC_TOKEN_SIGNING_KEY="k" * 48,
        WATERING_HOLE_API="http://127.0.0.1:9/v1",
        WATERING_HOLE_TOKEN="t",
        WH_VERIFY_TOKEN="v",
    )
    config = (ROOT / "gateway.yaml").read_text()
    config = config.replace("mappings_dir: mappings", f"mappings_dir: {ROOT / 'mappings'}")
    config = config.replace("data_dir: data", f"data_dir: {tmp_path / 'data'}")
    (tmp_path / "gateway.yaml").write_text(config)
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(tmp_path / "gateway.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert (
        "watering-hole.yaml:44 at /webhook/signature/secrets/0: environment variable WH_SECRET is not set"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


async def test_serving_with_the_memory_store_warns_that_nothing_is_durable(
    tmp_path: Path,
) -> None:
    unreachable = "http://127.0.0.1:9"  # nothing is sent: the gateway starts and stops
    node = write_node_config(tmp_path, wh_url=unreachable, cxone_url=unreachable, backend="memory")
    gateway = GatewayProcess(node)
    try:
        await gateway.start_ready()
        assert await gateway.terminate() == 0
    finally:
        gateway.stop()
    assert "store.backend is memory: accepted messages are lost on restart" in gateway.log_text()
