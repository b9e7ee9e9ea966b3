"""Draw the benchmark's chart (PNG) from a results.json of bench.run.

python -m bench.chart bench/results/run-.../results.json docs/perf/chart.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLOURS = ["#6b7b8c", "#e07a1f", "#3a8a5c", "#8a3a7a", "#2a62a8"]


def chart(result: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    systems = list(summary)
    paths = [p for p in result["config"]["paths"] if p in summary[systems[0]]]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    width = 0.8 / max(len(systems), 1)

    def bars(ax: Any, values: dict[str, list[float]], title: str, unit: str) -> None:
        for i, system in enumerate(systems):
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(paths))]
            ax.bar(xs, values[system], width, label=system, color=COLOURS[i % len(COLOURS)])
            for x, v in zip(xs, values[system], strict=True):
                ax.annotate(
                    f"{v:.0f}" if v >= 10 else f"{v:.2f}",
                    (x, v),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(paths)), paths, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit, fontsize=8)

    bars(
        axes[0],
        {s: [summary[s][p]["max"]["throughput"] for p in paths] for s in systems},
        "max throughput (higher is better)",
        "messages / s",
    )
    axes[0].legend(fontsize=8)
    bars(
        axes[2],
        {s: [summary[s][p]["max"]["cpu_per_1000"] for p in paths] for s in systems},
        "CPU per 1,000 messages (at max)",
        "CPU seconds",
    )

    ax = axes[1]
    for i, system in enumerate(systems):
        for j, path in enumerate(paths):
            lat = summary[system][path]["latency"]["latency_ms"]
            x = j + (i - (len(systems) - 1) / 2) * width
            ax.bar(x, lat["p99"], width, color=COLOURS[i % len(COLOURS)], alpha=0.35)
            ax.bar(x, lat["p95"], width, color=COLOURS[i % len(COLOURS)], alpha=0.6)
            ax.bar(x, lat["p50"], width, color=COLOURS[i % len(COLOURS)])
            ax.annotate(f"{lat['p99']:.1f}", (x, lat["p99"]), ha="center", va="bottom", fontsize=7)
            own = summary[system][path].get("latency-own")
            if own is not None:  # the same system at half of its own max
                ax.plot([x], [own["latency_ms"]["p99"]], marker="D", color="black", ms=4)
    ax.set_xticks(range(len(paths)), paths, fontsize=8)
    ax.set_yscale("log")
    ax.set_title(
        "latency request -> sink at half the bridge's max\n"
        "(p50 dark, p95, p99 light; \u25c6 p99 at half its own max)",
        fontsize=9,
    )
    ax.set_ylabel("ms (log)", fontsize=8)

    ax = axes[3]
    peaks = [summary[s].get("peak_rss_mb") or 0 for s in systems]
    ax.bar(systems, peaks, color=[COLOURS[i % len(COLOURS)] for i in range(len(systems))])
    for x, v in enumerate(peaks):
        ax.annotate(f"{v:.0f}", (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_title("peak RSS over the run", fontsize=10)
    ax.set_ylabel("MB", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)

    m = result["machine"]
    fig.suptitle(
        f"byoc-gateway vs hand-written bridge - {m['cpu']}, {m['cpus']} cores, Python "
        f"{m['python']}, medians of {result['config']['reps']} runs",
        fontsize=10,
    )
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main() -> int:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    chart(json.loads(source.read_text()), target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
