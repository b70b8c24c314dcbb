"""Benchmark results: JSON, Markdown per run, the refresh chart, bench/results/README.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def label(results: dict) -> str:
    spans = results["spans_in_window"]
    return f"{spans / 1e6:.1f}M-spans" if spans >= 1e6 else f"{spans / 1e3:.0f}k-spans"


def capacity(results: dict, schedule_seconds: float) -> dict:
    """Least-squares line through the stage points: spans that refresh within the schedule."""
    points = [(s["spans_in_window"], s["concurrent_refresh_s"]) for s in results["stages"]]
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx else mean_y / mean_x
    intercept = mean_y - slope * mean_x
    return {
        "seconds_per_million_spans": slope * 1e6,
        "fixed_seconds": intercept,
        "spans_within_schedule": int((schedule_seconds - intercept) / slope),
        "spans_within_half_schedule": int((schedule_seconds / 2 - intercept) / slope),
    }


def capacity_line(results: dict, schedule_seconds: float) -> str:
    cap = capacity(results, schedule_seconds)
    server = results["server"]
    return (
        f"capacity: about {cap['spans_within_schedule'] / 1e6:.1f}M spans in the 7-day window "
        f"refresh concurrently within the {schedule_seconds:.0f}s schedule "
        f"({cap['spans_within_half_schedule'] / 1e6:.1f}M with half the schedule to spare), "
        f"measured at up to {results['spans_in_window'] / 1e6:.2f}M spans on "
        f"{server['cpu_cores']} cores, PostgreSQL {server['server_version']}, "
        f"shared_buffers {server['shared_buffers']}, work_mem {server['work_mem']}"
    )


def markdown(results: dict, schedule_seconds: float) -> str:
    listing, refresh = results["listing"], results["refresh"]
    cycles = results["cycles"]
    server = results["server"]
    lines = [
        f"# Benchmark: {results['spans_in_window']:,} spans in the window "
        f"({results['traces_in_view']:,} traces in the view)",
        "",
        f"Run {results['started_at']} - {results['finished_at']}; {server['cpu_cores']} cores, "
        f"{server['memory_gib']} GiB, PostgreSQL {server['server_version']}, "
        f"shared_buffers {server['shared_buffers']}, work_mem {server['work_mem']}, "
        f"max_parallel_workers_per_gather {server['max_parallel_workers_per_gather']}, "
        f"jit {server['jit']}. {results['spans_total']:,} spans in otel_traces.",
        "",
        "## Listing (the spec's two queries)",
        "",
        "| query | view p50 | view p95 | runs | live p50 | live p95 | runs | p50 speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in listing.items():
        view, live = row["view"], row["live"]
        computed_live = (
            f"{live['p50_ms']:,.0f} ms | {live['p95_ms']:,.0f} ms | {live['runs']} | "
            f"{row['speedup_p50']:,.0f}x"
            if live
            else "not measured (--skip-live-listing) | | | "
        )
        lines.append(
            f"| {name} | {view['p50_ms']:.3f} ms | {view['p95_ms']:.3f} ms | {view['runs']} | "
            f"{computed_live} |"
        )
    lines += [
        "",
        "## Refresh (median of alternated runs)",
        "",
        "| what | median | runs |",
        "|---|---|---|",
    ]
    for name, row in refresh.items():
        runs = ", ".join(f"{value:.2f}" for value in row["runs_s"])
        lines.append(f"| {name} | {row['median_s']:.2f} s | {runs} |")
    cap = capacity(results, schedule_seconds)
    first, last = cycles[0], cycles[-1]
    lines += [
        "",
        f"Concurrent refresh / naive definition: **{results['refresh_ratio_vs_naive']:.2f}**.",
        "",
        f"Migration (`alembic upgrade head` over the data): {results['migration_s']:.1f} s; "
        f"first stage: {results['first_migration_s']:.1f} s.",
        "",
        "## Stages (the chart's points)",
        "",
        "| traces loaded | spans in window | concurrent refresh |",
        "|---|---|---|",
        *(
            f"| {s['traces']:,} | {s['spans_in_window']:,} | {s['concurrent_refresh_s']:.2f} s |"
            for s in results["stages"]
        ),
        "",
        f"Fit: {cap['seconds_per_million_spans']:.2f} s per million spans + "
        f"{cap['fixed_seconds']:.2f} s. {capacity_line(results, schedule_seconds)}.",
        "",
        f"## View size over {len(cycles)} refresh cycles "
        "(new, late and aged-out spans between them)",
        "",
        "Each cycle: new traces arrive, 50 traces get a late error span, as many of the oldest "
        "traces leave the window as arrived, then a concurrent refresh. The cycles run back to "
        "back, so autovacuum_naptime is scaled down with them "
        f"(to {results.get('cycles_autovacuum_naptime', '60s (default)')}).",
        "",
        "| | after migration | after cycle 1 | after last cycle |",
        "|---|---|---|---|",
    ]
    before = results["view_after_migration"]
    for key in ("total_bytes", "heap_bytes", "live_rows", "dead_rows", "autovacuums"):
        lines.append(f"| {key} | {before[key]:,} | {first[key]:,} | {last[key]:,} |")
    dead = [c["dead_rows"] for c in cycles]
    per_row = [c["total_bytes"] / max(1, c["live_rows"]) for c in (before, first, last)]
    lines += [
        "| total bytes per live row | " + " | ".join(f"{value:,.0f}" for value in per_row) + " |",
        "",
        f"Dead rows over the cycles: min {min(dead):,}, max {max(dead):,}. "
        f"Refresh per cycle: {min(c['refresh_s'] for c in cycles):.2f}-"
        f"{max(c['refresh_s'] for c in cycles):.2f} s.",
        "",
        "## Where a refresh's time goes: EXPLAIN (ANALYZE, BUFFERS) of the definition",
        "",
        "```",
        results["explain_definition"],
        "```",
        "",
    ]
    if "incremental" in results:
        lines += incremental_markdown(results)
    return "\n".join(lines)


