"""bench/results/refresh.png: refresh time against spans in the window (every benchmark run,
both modes, plain and hypertable stores) and, where there are freshness results, their
time-to-list beside it."""

from __future__ import annotations

from pathlib import Path

from bench import freshness_report, report
from bench.workload import RATE
from cnpg_trace_summaries.contract import WINDOW_DAYS

HYPERTABLE = "hypertable"


def store(run: dict) -> str:
    """plain, or hypertable (``--hypertable``); runs from before the option are plain."""
    return run.get("store", "plain")


def version(run: dict) -> str:
    return run["server"]["server_version"].split()[0]


def refresh_panel(axis, runs: list[dict], schedule_seconds: float) -> None:
    """Refresh time against spans in the window: both modes, every stage of every result."""
    versions = sorted({version(run) for run in runs})
    for number, run in enumerate(runs):
        color = f"C{number}"
        when = run["started_at"][:10]
        if len(versions) > 1:
            when += f", PostgreSQL {version(run)}"
        hyper = store(run) == HYPERTABLE
        where = ", otel_traces a compressed hypertable" if hyper else ""
        xs = [s["spans_in_window"] / 1e6 for s in run["stages"]]
        ys = [s["concurrent_refresh_s"] for s in run["stages"]]
        name = f"view: REFRESH ... CONCURRENTLY, run of {run['traces']:,} traces{where} ({when})"
        axis.plot(xs, ys, marker="D" if hyper else "o", linestyle=":" if hyper else "-",
                  color=color, label=name)  # fmt: skip
        axis.scatter([xs[-1]], [run["refresh"]["naive_concurrent"]["median_s"]], marker="x",
                     color="grey")  # fmt: skip
        points = report.incremental_points(run)
        if points:
            axis.plot(
                [x / 1e6 for x, _ in points], [y for _, y in points], marker="s",
                linestyle="-." if hyper else "--", color=color,
                label=f"incremental: one cycle of {RATE:,} spans/s, same run",
            )  # fmt: skip
            twins = [(x, s["incremental_paired"]["view_refresh_s"]) for s in run["stages"]
                     if s.get("incremental_paired") for x in [s["spans_in_window"]]]  # fmt: skip
            if twins:
                axis.scatter([x / 1e6 for x, _ in twins], [y for _, y in twins], marker="o",
                             color=color, facecolors="none", s=60)  # fmt: skip
            rebuild = run["incremental"]["full_rebuild"]["from_empty"]["seconds"]
            axis.scatter([run["incremental"]["spans_in_window"] / 1e6], [rebuild], marker="^",
                         color=color, facecolors="none")  # fmt: skip
    axis.axhline(schedule_seconds, color="red", linestyle="--", label="the 2-minute schedule")
    axis.scatter([], [], marker="x", color="grey", label="view: naive definition, at N")
    axis.scatter([], [], marker="^", color="black", facecolors="none",
                 label="incremental: full rebuild from empty, at N")  # fmt: skip
    axis.scatter([], [], marker="o", color="black", facecolors="none", s=60,
                 label="view's twin, refreshed in the same cycles (median)")  # fmt: skip
    axis.set_yscale("log")
    axis.set_xlim(left=0)
    server = runs[-1]["server"]
    axis.set_xlabel(f"spans in the {WINDOW_DAYS}-day window (millions)")
    axis.set_ylabel("refresh time (s, log scale)")
    axis.set_title(
        f"otel_trace_summaries refresh time, both modes — {server['cpu_cores']} cores, "
        f"PostgreSQL {' and '.join(versions)}"
    )
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)


def chart(out: Path, schedule_seconds: float) -> Path | None:
    """The refresh panel, and the freshness panel beside it where there are freshness results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report.load_runs(out)
    fresh = freshness_report.load_runs(out)
    if not runs and not fresh:
        return None
    panels = [bool(runs), bool(fresh)].count(True)
    figure, axes = plt.subplots(1, panels, figsize=(9 + 6 * (panels - 1), 5.5), squeeze=False,
                                width_ratios=[3, 2][:panels])  # fmt: skip
    left = iter(axes[0])
    if runs:
        refresh_panel(next(left), runs, schedule_seconds)
    if fresh:
        freshness_report.panel(next(left), fresh)
    path = out / "refresh.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
