"""Instructions per message under callgrind: an A/B measure the host's noise cannot move.

On a shared VM the same server's throughput moves by a quarter between minutes, so a
change worth a few per cent cannot be seen in `bench.run`. Valgrind's callgrind counts
the instructions a process executes, whatever else the host is doing: the system under
test runs under it, the load generator sends a warm-up, the counters are zeroed
(`callgrind_control -z`), the measured messages are sent and delivered, and the
counters are dumped. Two runs of one build agree within about 1 %, most of it from how
operations happen to batch.

Instructions are not time: C code whose instruction set valgrind does not emulate
(SHA-NI in OpenSSL, some of orjson's SIMD) takes a longer path under it, so signature
checks and JSON weigh more here than on the CPU. Compare builds, not steps of unlike
code; `bench.run` stays the measure of speed.

    python -m bench.instructions --system gateway --path inbound --messages 2000

Needs `valgrind` and `callgrind_control` (Debian's valgrind package).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    bench_env,
    children,
    collect_arrivals,
    cpu_sets,
    pin,
    split_system,
    start,
    start_sinks,
    system_command,
    wait_http,
)
from bench.run import PATHS
from tests.ports import free_port

SUT_CPUS, LOAD_CPUS = cpu_sets(True)  # as bench.run pins them
_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)


class Run:
    """One system under callgrind, the sinks, and closed-loop load."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.kind, self.batch = PATHS[args.path]
        self.sinks_url = ""
        self.target = ""

    def send(self, count: int, tag: str) -> None:
        """Send `count` messages and wait until the sinks have every one of them."""
        result = self.out / f"load-{tag}.json"
        cmd = [sys.executable, "-m", "bench.loadgen", "--target", self.target]
        cmd += ["--kind", self.kind, "--batch", str(self.batch), "--mode", "closed"]
        cmd += ["--count", str(count), "--concurrency", str(self.args.concurrency)]
        cmd += ["--threads", "500", "--tag", tag, "--out", str(result)]
        subprocess.run(
            cmd,
            check=True,
            stdout=subprocess.DEVNULL,
            preexec_fn=pin(LOAD_CPUS),
        )
        sent: dict[str, float] = orjson.loads(result.read_bytes())["sent"]
        # valgrind slows the system fifty-fold: wait on progress as long as on the total
        arrived = collect_arrivals(self.sinks_url, sent, self.args.timeout, self.args.timeout)
        if len(arrived) < len(sent):
            raise SystemExit(f"only {len(arrived)} of {len(sent)} messages arrived in time")

    def measure(self) -> dict[str, Any]:
        args = self.args
        counts = self.out / "callgrind.out"
        with children() as started:
            sinks = start_sinks(self.out, LOAD_CPUS)
            started.append(sinks.child)
            self.sinks_url = sinks.cxone_url
            pp, cp = free_port(), free_port()
            kind, store, root = split_system(args.system)
            cmd = system_command(
                kind,
                self.out / "gateway",
                platform_port=pp,
                cxone_port=cp,
                loop="auto",
                store=store or "sqlite",
            )
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}", *cmd]
            env = bench_env(sinks.platform_api, sinks.cxone_url)
            child = start("system", cmd, self.out, env=env, cpus=SUT_CPUS, root=root)
            started.append(child)
            for port in (cp, pp):  # valgrind makes the start take a minute or two
                wait_http(f"http://127.0.0.1:{port}/healthz", child, timeout=args.timeout)
            self.target = f"http://127.0.0.1:{pp if self.kind == 'inbound' else cp}"
            self.send(args.warmup, "warm")
            subprocess.run(
                ["callgrind_control", "-z", str(child.pid)], check=True, stdout=subprocess.DEVNULL
            )
            self.send(args.messages, "m")
            subprocess.run(
                ["callgrind_control", "-d", str(child.pid)], check=True, stdout=subprocess.DEVNULL
            )
            dumps = sorted(self.out.glob("callgrind.out*"))
            totals = [int(m.group(1)) for d in dumps if (m := _TOTAL.search(d.read_bytes()))]
        if len(totals) != 1:
            raise SystemExit(f"expected one callgrind dump in {self.out}, found {len(totals)}")
        messages = args.messages
        return {
            "system": args.system,
            "path": args.path,
            "messages": messages,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "instructions": totals[0],
            "instructions_per_message": totals[0] / messages,
        }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--system",
        default="gateway",
        help="bridge | gateway[-sqlite|-memory|-redis][@DIR] (DIR: another checkout)",
    )
    p.add_argument("--path", default="inbound", choices=list(PATHS))
    p.add_argument("--messages", type=int, default=2000, help="messages counted")
    p.add_argument("--warmup", type=int, default=500, help="messages sent before counting")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per wait")
    p.add_argument("--out", type=Path, default=None, help="a JSON file for the result")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    result = Run(args, work).measure()
    line = f"{result['system']} {result['path']}: {result['instructions_per_message']:,.0f}"
    print(line + f" instructions per message ({args.messages} messages)")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
