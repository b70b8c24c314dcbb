"""``python -m bench`` (``make bench``): listing speed, refresh cost, capacity.

One run, on one throwaway local cluster and the same data:

1. loads N traces in stages (N/4, N/2, N) and times a concurrent refresh at each
   stage (the chart's points), migrating to head after the first stage;
2. at N: the migration time over the data, the two listing queries on the view
   and computed live (p50/p95), the refreshes (concurrent, plain, the defining
   query alone, a bare scan of the window, and the naive definition's concurrent
   refresh), alternated, the median of each; EXPLAIN ANALYZE of the definition;
3. 30 cycles of "new traces arrive, late spans arrive, the oldest traces leave
   the window, concurrent refresh" (a steady state: the view keeps its size),
   with the view's size and dead tuples after each;
4. writes bench/results/<spans>.json and .md, redraws bench/results/refresh.png
   from every result there, updates bench/results/README.md, and prints the
   capacity line.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import generate, measure, report
from cnpg_trace_summaries.localdb import LocalCluster
from cnpg_trace_summaries.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE_SECONDS = 120

NEW_SPANS_SQL = """
INSERT INTO otel_traces ("timestamp", trace_id, span_id, parent_span_id, name, kind,
    start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message)
SELECT now() - interval '1 minute' + s * interval '2 milliseconds' + i * interval '1 millisecond',
       md5('cycle' || %(cycle)s || '.' || i),
       left(md5('cycle' || %(cycle)s || '.' || i || '.' || s), 16),
       CASE WHEN s = 0 THEN NULL
            ELSE left(md5('cycle' || %(cycle)s || '.' || i || '.' || (s - 1) / 2), 16) END,
       'GET /new', 2, 0, 1000000 * (s + 1), 'frontend', CASE WHEN i %% 33 = 0 THEN 2 ELSE 0 END, ''
FROM generate_series(1, %(traces)s) AS i CROSS JOIN generate_series(0, 9) AS s
"""

# Traces leaving the window, as time passes: the spans of the oldest traces in
# it go, so the view keeps a steady size and every refresh deletes rows.
AGED_OUT_SQL = """
DELETE FROM otel_traces
WHERE trace_id IN (SELECT md5('trace' || t) FROM generate_series(%(first)s, %(last)s) AS t)
"""

# Late spans of traces already in the view: an error arrives for 50 recent traces.
LATE_SPANS_SQL = """
INSERT INTO otel_traces ("timestamp", trace_id, span_id, parent_span_id, name, kind,
    start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message)
SELECT now(), md5('trace' || t), left(md5('late' || %(cycle)s || '.' || t), 16),
       left(md5(md5('trace' || t) || 0), 16), 'late.db', 3, 0, 1, 'inventory', 2, 'late error'
FROM generate_series(1, 50) AS t
"""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def alembic(url: str, *args: str) -> float:
    env = dict(os.environ, DATABASE_URL=url)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started


def unschedule_refresh(conn: psycopg.Connection) -> None:
    """The benchmark refreshes by itself; pg_cron must not refresh in the middle."""
    conn.execute(
        "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'otel_trace_summaries:%'"
    )


def server_facts(conn: psycopg.Connection) -> dict:
    names = (
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_parallel_workers_per_gather",
        "jit",
    )
    facts = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    facts |= {
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "machine": platform.machine(),
    }
    return facts


def run(args: argparse.Namespace) -> dict:
    state = Path(tempfile.mkdtemp(prefix="trace-summaries-bench-"))
    cluster = LocalCluster(state)
    log(f"starting a throwaway PostgreSQL cluster ({state})")
    cluster.start()
    url = cluster.libpq_url()
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "traces": args.traces,
        "stages": [],
    }
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            results["server"] = server_facts(conn)
            alembic(url, "upgrade", "00000000000001")
            stages = sorted({max(1, args.traces * k // 4) for k in (1, 2, 4)})
            loaded = 0
            for stage in stages:
                log(f"loading traces {loaded + 1:,}..{stage:,}")
                load_conn = psycopg.connect(url)
                generate.load_traces(
                    load_conn, loaded + 1, stage, args.traces, progress=progress_bar("  traces")
                )
                load_conn.close()
                loaded = stage
                conn.execute("VACUUM ANALYZE otel_traces")
                if not results["stages"]:
                    log("alembic upgrade head (first stage)")
                    results["first_migration_s"] = alembic(url, "upgrade", "head")
                    unschedule_refresh(conn)
                spans = generate.spans_in_window(conn)
                timings = measure.alternated_medians(
                    conn,
                    {"concurrent": "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries"},
                    args.rounds,
                    progress=log,
                )
                results["stages"].append(
                    {
                        "traces": stage,
                        "spans_in_window": spans,
                        "concurrent_refresh_s": timings["concurrent"]["median_s"],
                    }
                )
            results["spans_in_window"] = results["stages"][-1]["spans_in_window"]
            results["spans_total"] = conn.execute("SELECT count(*) FROM otel_traces").fetchone()[0]

            log("migration over the full data: alembic downgrade -1, then timed upgrade head")
            alembic(url, "downgrade", "-1")
            results["migration_s"] = alembic(url, "upgrade", "head")
            unschedule_refresh(conn)
            results["view_after_migration"] = measure.view_health(conn)
            results["traces_in_view"] = conn.execute(
                "SELECT count(*) FROM otel_trace_summaries"
            ).fetchone()[0]

            definition = (
                conn.execute(
                    "SELECT definition FROM pg_matviews WHERE matviewname = 'otel_trace_summaries'"
                )
                .fetchone()[0]
                .rstrip()
                .rstrip(";")
            )
            live = f"({definition}) AS live"
            results["listing"] = {}
            for name, template in (
                ("time_range", measure.TIME_RANGE_QUERY),
                ("service", measure.SERVICE_QUERY),
            ):
                log(f"listing query {name}: {args.listing_runs} runs on the view")
                on_view = measure.latency(
                    conn, template.format(source="otel_trace_summaries"), args.listing_runs
                )
                log(f"listing query {name}: up to {args.live_runs} runs computed live")
                on_live = measure.latency(
                    conn,
                    template.format(source=live),
                    args.live_runs,
                    budget_seconds=args.live_budget,
                )
                results["listing"][name] = {
                    "view": on_view,
                    "live": on_live,
                    "speedup_p50": on_live["p50_ms"] / on_view["p50_ms"],
                }

            log("creating the naive single-pass view for comparison")
            conn.execute(
                f"CREATE MATERIALIZED VIEW bench_naive_summaries AS {measure.NAIVE_DEFINITION}"
            )
            conn.execute("CREATE UNIQUE INDEX ON bench_naive_summaries (trace_id)")
            log(f"refresh comparison, {args.rounds} alternated rounds")
            results["refresh"] = measure.alternated_medians(
                conn,
                {
                    "concurrent": "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries",
                    "plain": "REFRESH MATERIALIZED VIEW otel_trace_summaries",
                    "definition_only": f"EXPLAIN (ANALYZE, TIMING OFF) {definition}",
                    "window_scan_floor": f"EXPLAIN (ANALYZE, TIMING OFF) {measure.FLOOR_QUERY}",
                    "naive_concurrent": (
                        "REFRESH MATERIALIZED VIEW CONCURRENTLY bench_naive_summaries"
                    ),
                },
                args.rounds,
                progress=log,
            )
            results["refresh_ratio_vs_naive"] = (
                results["refresh"]["concurrent"]["median_s"]
                / results["refresh"]["naive_concurrent"]["median_s"]
            )
            conn.execute("DROP MATERIALIZED VIEW bench_naive_summaries")
            results["explain_definition"] = "\n".join(
                row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {definition}")
            )

            log(f"{args.cycles} cycles: new, late and aged-out spans, then a concurrent refresh")
            # The cycles run back to back instead of two minutes apart: scale
            # autovacuum's naptime (60 s) by the same factor, or the compressed
            # run would show dead rows that a real deployment never accumulates.
            conn.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
            conn.execute("SELECT pg_reload_conf()")
            results["cycles_autovacuum_naptime"] = "1s"
            new_traces = max(10, args.traces // 200)
            cycles = []
            for cycle in range(1, args.cycles + 1):
                conn.execute(NEW_SPANS_SQL, {"cycle": cycle, "traces": new_traces})
                conn.execute(LATE_SPANS_SQL, {"cycle": cycle})
                oldest = args.traces - (cycle - 1) * new_traces
                conn.execute(AGED_OUT_SQL, {"first": oldest - new_traces + 1, "last": oldest})
                took = measure.seconds(
                    conn, "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries"
                )
                cycles.append({"cycle": cycle, "refresh_s": took, **measure.view_health(conn)})
                if cycle % 5 == 0 or cycle == 1:
                    log(f"cycle {cycle}: refresh {took:.2f}s, {cycles[-1]}")
            results["cycles"] = cycles
    finally:
        if args.keep:
            log(f"cluster kept running: {url}")
        else:
            cluster.stop()
            shutil.rmtree(cluster.state().cluster_dir, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traces", type=int, default=100_000, help="traces to generate (100,000 = about 1M spans)"
    )
    parser.add_argument("--listing-runs", type=int, default=1_000)
    parser.add_argument("--live-runs", type=int, default=200)
    parser.add_argument(
        "--live-budget",
        type=float,
        default=900.0,
        help="seconds the live listing queries may take in all, per query",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternated refresh rounds")
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)
    if args.traces < 4 or args.rounds < 1 or args.cycles < 1:
        parser.error("--traces must be at least 4, --rounds and --cycles at least 1")

    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = report.write(results, args.out)
    print(report.capacity_line(results, SCHEDULE_SECONDS))
    for path in paths:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
