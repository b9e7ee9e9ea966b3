"""Issue 3: hot reload of a real `byoc-gateway serve` process (SIGHUP, `byoc-gateway reload`).

The gateway is a child process on a gateway.yaml written by the sandbox wiring, over a
mappings directory of its own; the simulators run here. A reload must pick up a changed
mapping, an added and a removed one; a broken file must leave the running configuration
in service, with the error (file, line, place) in the log, on /status.json and in the
`byoc_reloads_total` metric. A rotated `${file:...}` secret is picked up too (in-process).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from gateway.clock import FakeClock
from gateway.sandbox.wiring import CHAT_CHANNEL, REPO_MAPPINGS
from tests.harness import SECRETS, start_world
from tests.procs import (
    READY_TIMEOUT,
    ROOT,
    GatewayProcess,
    Sims,
    metric,
    start_sims,
    write_node_config,
)

EXTRA = ROOT / "tests" / "fixtures" / "mappings" / "minimal.yaml"
ROTATED = "rotated-webhook-secret-0123456789"


class ServeWithPidFile(GatewayProcess):
    """A `serve` child that also writes a pid file (what `byoc-gateway reload` reads)."""

    @property
    def pid_file(self) -> Path:
        return self.node.path.parent / "gateway.pid"

    def start(self) -> None:
        env = {**os.environ, **self.node.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        args = ["serve", "--config", str(self.node.path), "--pid-file", str(self.pid_file)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Ready, and the pid file written (it comes just after the listeners start)."""
        await super().wait_ready(timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while not (self.pid_file.exists() and self.pid_file.read_text().strip() == str(self.pid)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no pid file after {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)  # another process's file: nothing to wait on but polling


def mapping_with_secret_file() -> str:
    """The Watering Hole mapping with its webhook secret in a file next to it."""
    text = (REPO_MAPPINGS / "watering-hole.yaml").read_text(encoding="utf-8")
    old = 'secrets: ["${WH_SECRET}", "${WH_SECRET_PREVIOUS:-}"]'
    assert text.count(old) == 1
    return text.replace(old, 'secrets: ["${file:wh-secret.txt}"]')


def reload_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "reload", *args],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "BYOC_ADMIN_TOKEN"}, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def status(gw: GatewayProcess) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {SECRETS.admin_token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(gw.cxone_url + "/status.json", headers=headers) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def next_reload(gw: GatewayProcess, after: int, timeout: float = 20.0) -> dict[str, Any]:
    """Poll /status.json until a reload later than `after` is reported (bounded I/O poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last: dict[str, Any] = (await status(gw))["last_reload"]
        if last["seq"] > after:
            return last
        assert loop.time() < deadline, f"no reload outcome in {timeout} s:\n{gw.log_tail()}"
        await asyncio.sleep(0.05)  # another process: nothing to wait on but its status page


async def dm_reaches_cxone(sims: Sims, gw: GatewayProcess, user: str, text: str) -> None:
    sims.wh.webhook_url = gw.webhook_url
    _, msg = await sims.wh.user_sends_dm(user, text)
    (attempt,) = await sims.wh.flush()
    assert attempt.status == 200, (attempt.status, gw.log_tail())
    await sims.cxone.wait_for(
        lambda: any(m.message_id == msg for m in sims.cxone.messages), timeout=10
    )


async def test_sighup_and_reload_command_swap_or_keep_the_whole_configuration(
    tmp_path: Path,
) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    main = mappings / "watering-hole.yaml"
    shutil.copy(REPO_MAPPINGS / "watering-hole.yaml", main)
    async with start_sims(users=3) as sims:
        node = write_node_config(
            tmp_path / "node", wh_url=sims.wh_url, cxone_url=sims.cxone_url, mappings_dir=mappings
        )
        gw = ServeWithPidFile(node)
        try:
            await gw.start_ready()
            assert gw.pid_file.read_text().strip() == str(gw.pid)
            user = sims.users[0]
            await dm_reaches_cxone(sims, gw, user, "before any reload")
            first = (await status(gw))["last_reload"]
            assert first["ok"] and first["generation"] == 1 and first["seq"] == 1
            assert set(first["files"]) == {str(node.path), str(main)}

            # 1. SIGHUP: a changed mapping and an added one
            main.write_text(
                main.read_text().replace("description: The", "description: Reloaded, the"),
                encoding="utf-8",
            )
            shutil.copy(EXTRA, mappings / "extra.yaml")
            os.kill(gw.pid, signal.SIGHUP)
            ok = await next_reload(gw, after=1)
            assert ok["ok"] is True, ok["errors"]
            assert ok["generation"] == 2
            assert ok["changes"]["added"] == [str(mappings / "extra.yaml")]
            assert ok["changes"]["changed"] == [str(main)]
            assert ok["changes"]["removed"] == []
            assert set(ok["versions"]) == {"watering-hole", "minimal"}
            page = await status(gw)
            assert page["routing"]["generation"] == 2
            assert (
                page["routing"]["mappings"]["watering-hole"]["version"]
                == (ok["versions"]["watering-hole"])
            )
            await dm_reaches_cxone(sims, gw, user, "served by generation 2")
            assert await metric(gw.cxone_url, "byoc_reloads_total", outcome="ok") == 1

            # 2. `reload --wait`: a broken file is refused, everything running stays
            good = main.read_text()
            broken = good.replace('body: {typing: "{{ action == ', 'body: {typing: "{{ action = ')
            main.write_text(broken, encoding="utf-8")
            (mappings / "extra.yaml").unlink()
            line = next(n for n, t in enumerate(broken.splitlines(), 1) if 'typing: "{{ act' in t)
            done = reload_cli("--pid-file", str(gw.pid_file), "--wait", "--config", str(node.path),
                              env=dict(node.env))  # fmt: skip
            assert done.returncode == 1, done.stdout + done.stderr
            assert "reload failed: the running configuration stays in service" in done.stdout
            place = f"{main}:{line} at /outbound/0/request/body/typing"
            assert place in done.stdout
            page = await status(gw)
            failed = page["last_reload"]
            assert failed["ok"] is False and failed["seq"] == 3 and failed["generation"] == 3
            (problem,) = failed["problems"]
            assert problem["file"] == str(main) and problem["line"] == line
            assert problem["where"] == "/outbound/0/request/body/typing"
            assert page["routing"]["generation"] == 2
            assert set(page["routing"]["mappings"]) == {"watering-hole", "minimal"}
            await dm_reaches_cxone(sims, gw, user, "still served by generation 2")
            assert await metric(gw.cxone_url, "byoc_reloads_total", outcome="error") == 1

            # 3. fixed, and the extra mapping stays removed: `reload --wait`, JSON, by URL
            main.write_text(good, encoding="utf-8")
            done = reload_cli("--pid", str(gw.pid), "--wait", "--url", gw.cxone_url, "--format",
                              "json", env={"BYOC_ADMIN_TOKEN": SECRETS.admin_token})  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            result = json.loads(done.stdout)
            assert result["ok"] is True and result["generation"] == 3
            assert result["changes"]["removed"] == [str(mappings / "extra.yaml")]
            assert set(result["versions"]) == {"watering-hole"}
            await dm_reaches_cxone(sims, gw, user, "served by generation 3")
            sims.cxone.gateway_box_url = gw.cxone_url + "/integration/box"
            status_ok, body = await sims.cxone.agent_reply(
                CHAT_CHANNEL, next(iter(sims.wh.world.conversations)), "a reply after reloads"
            )
            assert status_ok == 200, body
            assert await metric(gw.cxone_url, "byoc_reloads_total", outcome="ok") == 2
            assert await gw.terminate() == 0
        finally:
            gw.stop()
        log = gw.log_text()
        assert "Traceback" not in log
        assert "reloaded generation 2: minimal@" in log and "watering-hole@" in log
        assert f"added: {mappings / 'extra.yaml'}" in log
        assert f"reload failed, keeping the running configuration: {place}" in log
        assert "generation 2 stays in service" in log
        assert f"removed: {mappings / 'extra.yaml'}" in log
        assert not gw.pid_file.exists()  # serve removes its pid file on exit


def test_reload_command_errors_are_clear(tmp_path: Path) -> None:
    missing = reload_cli("--pid-file", str(tmp_path / "none.pid"))
    assert missing.returncode == 1
    assert "no running gateway found" in missing.stderr
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = reload_cli("--pid", str(gone.pid))
    assert dead.returncode == 1 and f"no process {gone.pid}" in dead.stderr
    no_token = reload_cli("--pid", str(os.getpid()), "--wait", "--url", "http://127.0.0.1:9")
    assert no_token.returncode == 2 and "admin token" in no_token.stderr
    unreachable = reload_cli(
        "--pid", str(os.getpid()), "--wait", "--url", "http://127.0.0.1:9",
        env={"BYOC_ADMIN_TOKEN": "x"},
    )  # fmt: skip
    # nothing was signalled (this test process would have caught a SIGHUP and died)
    assert unreachable.returncode == 1 and "cannot read http://127.0.0.1:9/status.json" in (
        unreachable.stderr
    )
    usage = reload_cli("--pid", "1", "--pid-file", "x")
    assert usage.returncode == 2


async def test_a_rotated_secret_file_is_picked_up_by_reload(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "watering-hole.yaml").write_text(mapping_with_secret_file(), encoding="utf-8")
    secret_file = mappings / "wh-secret.txt"
    secret_file.write_text(SECRETS.wh_secret + "\n", encoding="utf-8")
    clock = FakeClock(1_764_158_400.0)
    async with start_world(tmp_path / "gw", clock=clock, mappings_dir=mappings) as world:
        assert str(secret_file) in world.gateway.last_reload.files  # type: ignore[union-attr]
        _, msg = await world.dm("usr_zebra", "signed with the first secret")
        await world.delivered(CHAT_CHANNEL, msg)
        secret_file.write_text(ROTATED + "\n", encoding="utf-8")
        result = await world.gateway.reload()
        assert result.ok, result.errors
        assert result.changes["changed"] == [str(secret_file)]
        await world.wh.user_sends_dm("usr_zebra", "signed with the old secret")
        (refused,) = await world.wh.flush()
        assert refused.status == 401
        world.wh.webhook_secrets = (ROTATED,)
        _, msg = await world.dm("usr_zebra", "signed with the rotated secret")
        await world.delivered(CHAT_CHANNEL, msg)
