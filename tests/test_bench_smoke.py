"""The benchmark runs end to end: sinks, bridge, gateway and load generator, both paths.

It proves the tooling works and produces sane results; it never asserts speed (that is
what `python -m bench.run` reports, see docs/performance.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_drives_both_paths_of_both_systems(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--no-pin", "--no-chart", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())

    assert set(result["summary"]) == {"bridge", "gateway"}
    paths = {"inbound", "inbound-batch", "outbound"}
    phases = result["phases"]
    assert {(p["system"], p["path"], p["mode"]) for p in phases} == {
        (s, path, mode)
        for s in ("bridge", "gateway")
        for path in paths
        for mode in ("max", "latency")
    }
    for phase in phases:
        where = f"{phase['system']} {phase['path']} {phase['mode']}"
        assert phase["accepted"] > 0, where
        assert phase["delivered"] == phase["accepted"], where  # nothing lost on the way
        assert set(phase["statuses"]) == {"200"}, where
        assert not phase["errors"], where
        assert phase["throughput"] > 0, where
        lat = phase["latency_ms"]
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"], where
        assert phase["cpu_s"] >= 0 and phase["cpu_per_1000"] >= 0, where
        assert phase["peak_rss_mb"] > 0, where
    for system in ("bridge", "gateway"):
        assert result["summary"][system]["peak_rss_mb"] > 0
        for path in paths:
            assert set(result["summary"][system][path]) == {"max", "latency"}
    assert set(result["verdicts"]["gateway"]) == paths
    assert result["machine"]["python"]


def test_instructions_are_counted_per_delivered_message(tmp_path: Path) -> None:
    # the bridge starts fastest under valgrind; the gateway runs the same way
    out = tmp_path / "instructions.json"
    cmd = [sys.executable, "-m", "bench.instructions", "--system", "bridge"]
    cmd += ["--messages", "40", "--warmup", "10", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["system"], result["path"], result["messages"]) == ("bridge", "inbound", 40)
    # a webhook, a signature, a parse and an upstream call cannot take fewer
    assert result["instructions_per_message"] > 50_000
    assert "instructions per message" in proc.stdout


def test_a_gateway_from_another_checkout_runs_beside_this_one(tmp_path: Path) -> None:
    """`gateway@DIR` runs the gateway of another checkout (an A/B of two commits in one run).

    Here DIR is a copy of this checkout's code whose gateway package says where it is
    loaded from, so the test sees that the system ran the copy's code and not this one's.
    """
    copy = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "gateway", copy / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    marker = tmp_path / "loaded-from"
    init = copy / "gateway" / "__init__.py"
    init.write_text(
        init.read_text()
        + f"\nimport pathlib as _p\n_p.Path({str(marker)!r}).write_text(__file__)\n"
    )
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "bench.run", "--smoke", "--no-pin", "--no-chart"]
    cmd += ["--systems", f"bridge,gateway-memory@{copy}", "--paths", "outbound"]
    cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert marker.read_text() == str(copy / "gateway" / "__init__.py")
    result = json.loads((out / "results.json").read_text())
    name = f"gateway-memory@{copy}"
    assert set(result["summary"]) == {"bridge", name}
    phases = [p for p in result["phases"] if p["system"] == name]
    assert sorted(p["mode"] for p in phases) == ["latency", "max"]
    assert all(p["delivered"] == p["accepted"] > 0 for p in phases)


def test_a_system_from_elsewhere_must_be_a_checkout(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--systems", f"bridge,gateway@{tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"{tmp_path} is not a checkout of byoc-gateway" in proc.stderr
