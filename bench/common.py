"""What every benchmark part shares: credentials, payloads, signing, processes, /proc stats.

Both the gateway and the baseline bridge get exactly the same bytes: `delivery()` and
`reply()` build the Watering Hole deliveries and the CXone replies, `sign()` signs them
the way the Watering Hole does (specs/watering-hole.md, "Signature").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

CHAT_CHANNEL = "chat_watering_hole"
BOARD_CHANNEL = "board_watering_hole"
WEBHOOK_PATH = "/webhooks/watering-hole"
TOKEN_PATH = "/integration/box/1.0/token"  # noqa: S105 - a URL path
OUTBOUND_PATH = f"/integration/box/2.0/channel/{CHAT_CHANNEL}/outbound"


@dataclass(frozen=True)
class BenchSecrets:
    """The credentials every party of the benchmark agrees on (none of them is real)."""

    wh_api_token: str = "wh-token-bench-0123456789"  # noqa: S105
    wh_secret: str = "wh-webhook-secret-bench"  # noqa: S105
    wh_verify_token: str = "wh-verify-bench"  # noqa: S105
    byoc_client_id: str = "jungle-byoc"
    byoc_client_secret: str = "byoc-client-secret-bench"  # noqa: S105
    token_signing_key: str = "bench-signing-key-0123456789-abcdefghijklmnopqrstuv"  # noqa: S105
    access_key_id: str = "AKBENCH"
    access_key_secret: str = "access-key-secret-bench"  # noqa: S105
    app_client_id: str = "bench-app"
    app_client_secret: str = "bench-app-secret"  # noqa: S105
    admin_token: str = "bench-admin-token"  # noqa: S105


SECRETS = BenchSecrets()


def bench_env(platform_api: str, cxone_base: str) -> dict[str, str]:
    """The environment of a gateway (or the bridge) talking to the sinks."""
    s = SECRETS
    return {
        "WATERING_HOLE_API": platform_api,
        "WATERING_HOLE_TOKEN": s.wh_api_token,
        "WH_SECRET": s.wh_secret,
        "WH_VERIFY_TOKEN": s.wh_verify_token,
        "CXONE_BASE": cxone_base,
        "CXONE_ACCESS_KEY_ID": s.access_key_id,
        "CXONE_ACCESS_KEY_SECRET": s.access_key_secret,
        "CXONE_APP_CLIENT_ID": s.app_client_id,
        "CXONE_APP_CLIENT_SECRET": s.app_client_secret,
        "BYOC_CLIENT_ID": s.byoc_client_id,
        "BYOC_CLIENT_SECRET": s.byoc_client_secret,
        "BYOC_TOKEN_SIGNING_KEY": s.token_signing_key,
        "ADMIN_TOKEN": s.admin_token,
    }


# ------------------------------------------------------------------------------ payloads

TEXT = (
    "Hello! My order #{n} hasn't arrived yet; could you check? "
    'It was "express" \\ delivery 🦓 مرحبا'
)
REPLY_TEXT = "Thanks for waiting: your parcel left the warehouse this morning 🦒"


def event(tag: str, n: int, threads: int, now_ms: int) -> dict[str, Any]:
    """One `message.created` event of a customer (never an echo)."""
    k = n % threads
    return {
        "id": f"evt_{tag}_{n}",
        "type": "message.created",
        "occurred_at_ms": now_ms,
        "data": {
            "conversation": {"id": f"cnv_{k}"},
            "message": {
                "id": f"msg_{tag}_{n}",
                "text": TEXT.format(n=n),
                "sent_at_ms": now_ms,
                "attachments": [],
            },
            "sender": {
                "id": f"usr_{k}",
                "handle": f"zebra{k}",
                "display_name": "Zed Stripes",
                "avatar_url": "https://img.wateringhole.example/zed.png",
            },
        },
    }


def delivery(tag: str, first: int, count: int, threads: int) -> tuple[bytes, list[str]]:
    """A delivery of `count` events; returns the body and the message ids it carries."""
    now_ms = int(time.time() * 1000)
    events = [event(tag, n, threads, now_ms) for n in range(first, first + count)]
    body = orjson.dumps(
        {
            "delivery": {"id": f"dlv_{tag}_{first}", "attempt": 1},
            "account_id": "acc_jungle",
            "events": events,
        }
    )
    return body, [e["data"]["message"]["id"] for e in events]


def sign(body: bytes, secret: str = SECRETS.wh_secret, t: int | None = None) -> str:
    """`WH-Signature: t=<t>,v1=<hex>`: HMAC-SHA256 over `<t>.<raw body>`."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def reply(tag: str, n: int, threads: int) -> tuple[bytes, str]:
    """A CXone DFO 3.0 outbound reply; the sink finds its id as the first word of the text."""
    k = n % threads
    rid = f"rpl_{tag}_{n}"
    body = orjson.dumps(
        {
            "brand": {"id": 1001, "name": "The Jungle"},
            "thread": {"idOnExternalPlatform": f"cnv_{k}"},
            "messageContent": {"type": "TEXT", "payload": {"text": f"{rid} {REPLY_TEXT}"}},
            "endUserRecipients": [
                {"idOnExternalPlatform": f"usr_{k}", "name": "Zed Stripes", "isPrimary": True}
            ],
            "authorUser": {"id": 7, "firstName": "Ann", "surname": "Agent"},
            "attachments": [],
        }
    )
    return body, rid


# ----------------------------------------------------------------------------- gateway

GATEWAY_YAML = """\
mappings_dir: {mappings_dir}
data_dir: {data_dir}
admin_token: ${{ADMIN_TOKEN}}
listeners:
  platform: {{host: 127.0.0.1, port: {platform_port}}}
  cxone: {{host: 127.0.0.1, port: {cxone_port}}}
cxone:
  api_base: ${{CXONE_BASE}}/dfo/3.0
  auth:
    token_endpoint: ${{CXONE_BASE}}/token
    access_key_id: ${{CXONE_ACCESS_KEY_ID}}
    access_key_secret: ${{CXONE_ACCESS_KEY_SECRET}}
    client_id: ${{CXONE_APP_CLIENT_ID}}
    client_secret: ${{CXONE_APP_CLIENT_SECRET}}
  timeouts: {{connect: 2, read: 5, total: 8}}
  retry: {{max_attempts: 3, base_delay: 0.05, max_delay: 0.5}}
integrations:
  - name: jungle
    client_id: ${{BYOC_CLIENT_ID}}
    client_secrets: ["${{BYOC_CLIENT_SECRET}}"]
    token_signing_key: ${{BYOC_TOKEN_SIGNING_KEY}}
    channels:
{channels}
store:
  backend: {backend}
{store_extra}delivery:
  workers: {workers}
  poll_interval: 0.5
  retry: {{max_attempts: 50, base_delay: {base_delay}, max_delay: {max_delay}}}
outbound:
  deadline: 5
logging: {{level: {log_level}, format: json}}
"""


def channel_lines(mapping_names: Sequence[str]) -> str:
    """Bind the chat and board channels of every mapping to CXone channels."""
    lines = []
    for name in mapping_names:
        chat = CHAT_CHANNEL if name == "watering-hole" else f"chat_{name}"
        board = BOARD_CHANNEL if name == "watering-hole" else f"board_{name}"
        lines.append(f"      - {{id: {chat}, mapping: {name}, role: chat}}")
        lines.append(f"      - {{id: {board}, mapping: {name}, role: board}}")
    return "\n".join(lines)


def write_gateway_yaml(
    directory: Path,
    *,
    platform_port: int,
    cxone_port: int,
    backend: str = "sqlite",
    redis_url: str = "redis://127.0.0.1:6379/0",
    workers: int = 64,
    log_level: str = "WARNING",
    mappings_dir: Path = MAPPINGS,
    mapping_names: Sequence[str] = ("watering-hole",),
    base_delay: float = 0.2,
    max_delay: float = 2.0,
) -> Path:
    """Write a gateway.yaml for a gateway between the load generator and the sinks."""
    directory.mkdir(parents=True, exist_ok=True)
    store_extra = ""
    if backend == "redis":
        store_extra = f"  url: {redis_url}\n  prefix: bench-{os.getpid()}-{directory.name}\n"
    text = GATEWAY_YAML.format(
        mappings_dir=mappings_dir,
        data_dir=directory / "data",
        platform_port=platform_port,
        cxone_port=cxone_port,
        channels=channel_lines(mapping_names),
        backend=backend,
        store_extra=store_extra,
        workers=workers,
        log_level=log_level,
        base_delay=base_delay,
        max_delay=max_delay,
    )
    path = directory / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def gateway_command(config: Path, loop: str | None = None) -> list[str]:
    """`python -m gateway.cli serve --config ...` (with `--loop` once the CLI has it)."""
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
    if loop is not None and cli_has_loop_flag():
        cmd += ["--loop", loop]
    elif loop is not None:
        # the CLI of this checkout has no --loop yet: the launcher picks the loop, then
        # runs exactly the same `serve` command
        cmd = [sys.executable, "-m", "bench.launch", "--loop", loop, "--", *cmd[3:]]
    return cmd


def system_command(
    kind: str,
    directory: Path,
    *,
    platform_port: int,
    cxone_port: int,
    loop: str,
    store: str = "sqlite",
    workers: int = 64,
    log_level: str = "WARNING",
) -> list[str]:
    """The command starting a system under test: the bridge, or a gateway whose
    gateway.yaml is written into `directory` (its store, workers and log level)."""
    if kind == "bridge":
        return [
            sys.executable,
            "-m",
            "bench.bridge",
            "--platform-port",
            str(platform_port),
            "--cxone-port",
            str(cxone_port),
            "--loop",
            loop,
        ]
    config = write_gateway_yaml(
        directory,
        platform_port=platform_port,
        cxone_port=cxone_port,
        backend=store,
        workers=workers,
        log_level=log_level,
    )
    return gateway_command(config, loop)


_HAS_LOOP: bool | None = None


def cli_has_loop_flag() -> bool:
    global _HAS_LOOP
    if _HAS_LOOP is None:
        out = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        _HAS_LOOP = "--loop" in out.stdout
    return _HAS_LOOP


# --------------------------------------------------------------------------- processes


def split_system(name: str) -> tuple[str, str, Path]:
    """`gateway-memory@DIR` -> ("gateway", "memory", DIR); the store "" when unnamed, the
    checkout this one when no `@DIR` (DIR: another checkout, e.g. a worktree of an earlier
    commit, whose code runs beside this one's)."""
    system, _, elsewhere = name.partition("@")
    kind, _, store = system.partition("-")
    root = Path(elsewhere).resolve() if elsewhere else ROOT
    if not (root / "gateway" / "cli.py").is_file():
        raise SystemExit(f"{name}: {root} is not a checkout of byoc-gateway")
    return kind, store, root


def pin(cpus: set[int] | None) -> Any:
    """A preexec_fn that pins the child to `cpus` (None: no pinning)."""
    if not cpus:
        return None
    available = os.sched_getaffinity(0)
    chosen = cpus & available or available

    def preexec() -> None:
        os.sched_setaffinity(0, chosen)

    return preexec


def cpu_sets(pin_cpus: bool) -> tuple[set[int] | None, set[int] | None]:
    """(system under test, load side): one core each when the machine has two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin_cpus or len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


@dataclass
class Child:
    """A child process of the benchmark, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


def start(
    name: str,
    cmd: Sequence[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
    root: Path = ROOT,
) -> Child:
    """Start a child with its output in `log_dir/<name>.log`, its code from `root`
    (another checkout of the project: a `gateway@DIR` system of `bench.run`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = str(root) + os.pathsep + full_env.get("PYTHONPATH", "")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=root,
            preexec_fn=pin(cpus),
        )
    return Child(name, proc, log)


@dataclass(frozen=True)
class Sinks:
    """The running sinks: CXone at `cxone_url`, the Watering Hole API at `platform_api`."""

    child: Child
    cxone_url: str
    platform_api: str


def start_sinks(log_dir: Path, cpus: set[int] | None) -> Sinks:
    """Start the instant-answer sinks on free ports and wait until they answer."""
    cx, pl = free_port(), free_port()
    cmd = [sys.executable, "-m", "bench.sinks", "--cxone-port", str(cx), "--platform-port", str(pl)]
    child = start("sinks", cmd, log_dir, cpus=cpus)
    sinks = Sinks(child, f"http://127.0.0.1:{cx}", f"http://127.0.0.1:{pl}/v1")
    wait_http(sinks.cxone_url + "/_bench/health", child)
    return sinks


def wait_http(url: str, child: Child | None = None, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 2xx (the child must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited early; see {child.log}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - local URL
                if 200 <= resp.status < 300:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout} s: {last}")


def http_json(
    url: str, data: Any = None, headers: Mapping[str, str] | None = None, timeout: float = 30.0
) -> Any:
    """A small blocking JSON request for orchestration (never on a measured path)."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(  # noqa: S310 - local URL
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        raw = resp.read()
    return orjson.loads(raw) if raw else None


def collect_arrivals(
    sinks_url: str, sent: Mapping[str, float], timeout: float, stall: float = 10.0
) -> dict[str, float]:
    """The sinks' arrival times of the `sent` ids, once all arrived or nothing moves.

    Stops when every id arrived, `timeout` seconds have passed, or no new one arrived for
    `stall` seconds. Each dump returns the arrivals since the last one, so they add up.
    """
    arrivals: dict[str, float] = {}
    deadline = last_progress = time.monotonic()
    deadline += timeout
    while True:
        dump = http_json(sinks_url + "/_bench/dump")
        before = len(arrivals)
        for key, t in (*dump["cxone"].items(), *dump["platform"].items()):
            if key in sent:
                arrivals[key] = t
        now = time.monotonic()
        if len(arrivals) > before:
            last_progress = now
        if len(arrivals) >= len(sent) or now > deadline or now - last_progress > stall:
            return arrivals
        time.sleep(0.1)


# -------------------------------------------------------------------------- /proc stats


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, float]:
    """Current and peak resident set size in MB (VmRSS, VmHWM)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; idle and iowait out)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu(pids: Sequence[int]) -> float:
    """CPU seconds of this process, its waited-for children and the given live processes."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


class Interference:
    """CPU the rest of the machine used meanwhile (other jobs sharing the cores)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.busy0 = machine_busy()
        self.own0 = own_cpu(self.pids)

    def cores(self) -> float:
        """Average number of cores busy with work that is not the benchmark's."""
        foreign = (machine_busy() - self.busy0) - (own_cpu(self.pids) - self.own0)
        return max(0.0, foreign) / max(time.monotonic() - self.t0, 1e-9)


def wait_quiet(pids: Sequence[int], limit: float = 0.3, timeout: float = 30.0) -> float:
    """Wait (up to `timeout` s) until other jobs use less than `limit` cores; return their load."""
    deadline = time.monotonic() + timeout
    while True:
        probe = Interference(pids)
        time.sleep(0.5)
        load = probe.cores()
        if load < limit or time.monotonic() > deadline:
            return load


def dirty_mb() -> float:
    """Dirty page-cache data waiting for writeback, in MB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Dirty:"):
                return int(line.split()[1]) / 1024
    return 0.0


def settle(timeout: float = 30.0) -> None:
    """Flush the page cache and let the machine go quiet before the next measurement.

    The gateway's SQLite store writes its WAL through the page cache; the kernel writes
    it back later, on whatever core is free. Without this, that writeback lands in the
    *next* phase and is charged to whoever runs then.
    """
    os.sync()
    deadline = time.monotonic() + timeout
    while dirty_mb() > 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    import platform

    import aiohttp

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "orjson": orjson.__version__,
        "uvloop": _version("uvloop"),
    }


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 95, 99)) -> list[float]:
    """Nearest-rank percentiles of `values` (empty input gives NaNs)."""
    if not values:
        return [float("nan")] * len(points)
    ordered = sorted(values)
    out = []
    for p in points:
        rank = max(1, round(p / 100 * len(ordered) + 0.5))
        out.append(ordered[min(rank, len(ordered)) - 1])
    return out


def median(values: Sequence[float]) -> float:
    ordered = sorted(v for v in values if v == v)  # drop NaN
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `children()` stops every child on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Stop every child started inside the block, last first, whatever happens."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()
