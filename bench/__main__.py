"""``python -m bench`` (``make bench``): listing speed, refresh cost, capacity, both modes.

One run, on one throwaway local cluster and the same data (bench/results/README.md
has the full method):

1. loads N traces in stages (N/4, N/2, N) and times a concurrent refresh of the
   view at each stage (the chart's points), migrating to head after the first
   stage; at N/4 and N/2 it then switches the same database to the incremental
   mode (``trace-summaries switch incremental``, timed), times the refresh of a
   few steady-state cycles (1,000 spans/s), verifying after each, and switches
   back (``trace-summaries switch view``) before loading more;
2. at N, the view: the migration time over the data, the two listing queries on
   the view and computed live (p50/p95), the refreshes (concurrent, plain, the
   defining query alone, a bare scan of the window, and the naive definition's
   concurrent refresh), alternated, the median of each; EXPLAIN ANALYZE of the
   definition; 30 cycles of "new traces arrive, late spans arrive, the oldest
   traces leave the window, concurrent refresh", with the view's size after each;
3. at N, the incremental mode: the switch (timed, with its swap), the listing
   queries on the table, the full rebuild (over the exact table and from empty),
   the capture trigger's ingest overhead (enabled against disabled, alternated),
   then steady-state cycles of 1,000 spans/s, each verified against the
   definition, and single cycles at higher ingest rates (what bounds the mode);
4. writes bench/results/<spans>.json and .md, redraws bench/results/refresh.png
   and rewrites bench/results/README.md from every result there, and prints the
   capacity lines.

``--hypertable`` runs the same with otel_traces a compressed TimescaleDB hypertable
(bench/hypertable.py; its files are <spans>-hypertable.json and .md).
``python -m bench freshness`` is another benchmark: how soon a new trace is listed
with pg_cron refreshing under a steady ingest (bench/freshness.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, datetime

import psycopg

from bench import cluster as clusters
from bench import (
    freshness,
    generate,
    hypertable,
    incremental,
    ingest,
    measure,
    output,
    report,
)
from bench.command_line import ROOT, parser
from bench.facts import alembic, code_facts, server_facts
from bench.workload import (
    ERROR_EVERY,
    LATE_SPANS,
    RATE,
    SPANS_PER_TRACE,
    span_column_list,
    view_cycle_traces,
)
from cnpg_trace_summaries.contract import REFRESH_INTERVAL_SECONDS
from cnpg_trace_summaries.progress import progress_bar

# The view's cycles write the columns the summaries read; the others stay NULL.
_VIEW_CYCLE_COLUMNS = span_column_list(
    null=("service_version", "service_instance", "scope_name", "scope_version",
          "attributes", "resource_attributes", "events", "links")
)  # fmt: skip

# New traces of a view's cycle, timestamped in the last minute.
NEW_SPANS_SQL = f"""
INSERT INTO otel_traces ({_VIEW_CYCLE_COLUMNS})
SELECT now() - interval '1 minute' + s * interval '2 milliseconds' + i * interval '1 millisecond',
       md5('cycle' || %(cycle)s || '.' || i),
       left(md5('cycle' || %(cycle)s || '.' || i || '.' || s), 16),
       CASE WHEN s = 0 THEN NULL
            ELSE left(md5('cycle' || %(cycle)s || '.' || i || '.' || (s - 1) / 2), 16) END,
       'GET /new', 2, 0, 1000000 * (s + 1), 'frontend',
       CASE WHEN i %% {ERROR_EVERY} = 0 THEN 2 ELSE 0 END, ''
FROM generate_series(1, %(traces)s) AS i CROSS JOIN generate_series(0, {SPANS_PER_TRACE - 1}) AS s
"""

# Traces leaving the window, as time passes: the spans of the oldest traces in
# it go, so the view keeps a steady size and every refresh deletes rows.
AGED_OUT_TRACES = """SELECT md5('trace' || t)
    FROM generate_series(CAST(%(first)s AS integer), CAST(%(last)s AS integer)) AS t"""
AGED_OUT_SQL = f"""
DELETE FROM otel_traces
WHERE trace_id IN ({AGED_OUT_TRACES})
"""

# Late spans of a view's cycle: an error, timestamped now, under the root span of
# each of the LATE_SPANS newest loaded traces (traces 1.., the same ones every
# cycle). Not the incremental cycles' late spans, which go to older traces picked
# at random, in their trace's time (incremental.LATE_SPANS_OF_RANDOM_TRACES_SQL).
LATE_SPANS_OF_NEWEST_TRACES_SQL = f"""
INSERT INTO otel_traces ({_VIEW_CYCLE_COLUMNS})
SELECT now(), md5('trace' || t), left(md5('late' || %(cycle)s || '.' || t), 16),
       left(md5(md5('trace' || t) || 0), 16), 'late.db', 3, 0, 1, 'inventory', 2, 'late error'
FROM generate_series(1, {LATE_SPANS}) AS t
"""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def age_out(conn: psycopg.Connection, first: int, last: int, on_hypertable: bool) -> None:
    """The spans of loaded traces ``first..last`` leave (:data:`AGED_OUT_SQL`); on a
    hypertable, within the time range of those of them in the window (hypertable.bounded)."""
    traces = {"first": first, "last": last}
    if not on_hypertable:
        conn.execute(AGED_OUT_SQL, traces)
        return
    low, high = hypertable.time_range(conn, AGED_OUT_TRACES, traces)
    if low is not None:
        conn.execute(hypertable.bounded(AGED_OUT_SQL, low, high), traces)


def upgrade_head(url: str, conn: psycopg.Connection) -> float:
    """``alembic upgrade head``, timed; then its pg_cron job is unscheduled."""
    took = alembic(url, "upgrade", "head")
    incremental.unschedule(conn)
    return took


def switch(url: str, conn: psycopg.Connection, mode: str, when: str = "") -> dict:
    """``trace-summaries switch <mode>``, timed and logged; then its job is unscheduled."""
    log(f"trace-summaries switch {mode}{when}")
    switched = incremental.switch(url, mode)
    incremental.unschedule(conn)
    log(f"  {switched['output'].splitlines()[-1]}")
    return switched


def incremental_stage(
    url: str, conn: psycopg.Connection, session: incremental.Session, cycles: int
) -> dict:
    """At a stage: switch to incremental, time steady-state cycles (verified), switch back."""
    to_incremental = switch(url, conn, "incremental")
    band = session.add_boundary_band()
    twin_s = session.create_twin()
    done = session.cycles(cycles, label="  stage cycle")
    session.drop_twin()
    to_view = switch(url, conn, "view")
    return {
        "switch_to_incremental": to_incremental,
        "boundary_band": band,
        "cycles": done,
        "cycle_refresh_s": incremental.median_refresh(done),
        "paired": incremental.paired(done),
        "twin_build_s": twin_s,
        "switch_to_view": to_view,
    }


def incremental_part(
    url: str, conn: psycopg.Connection, session: incremental.Session, args: argparse.Namespace
) -> dict:
    """At N, after the view's part: the incremental mode on the same database."""
    part: dict = {}
    part["switch"] = switch(url, conn, "incremental", " (at N)")
    part["spans_in_window"] = generate.spans_in_window(conn)
    part["rows"] = conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone()[0]
    part["verify_after_switch"] = incremental.verify(conn)
    log(f"listing queries on the incremental table: {args.listing_runs} runs each")
    part["listing"] = measure.listing(conn, args.listing_runs)
    part["full_rebuild"] = incremental.full_rebuilds(conn, log)
    log(f"ingest overhead of the capture trigger: {args.ingest_rounds} alternated rounds")
    part["ingest"] = ingest.measure(conn, args.ingest_rounds, log=log)
    log(f"capture overhead of DELETE: {args.ingest_rounds} alternated rounds")
    part["delete_capture"] = ingest.measure_deletes(
        conn, args.ingest_rounds, hypertable=args.hypertable, log=log
    )
    took, outcome = incremental.refresh(conn)
    check = incremental.verify(conn)
    part["after_ingest"] = {"refresh_s": took, "refresh": outcome, "verify": check}
    part["boundary_band"] = session.add_boundary_band()
    part["twin_build_s"] = session.create_twin()
    log(f"{args.incremental_cycles} steady-state cycles at {RATE:,} spans/s")
    part["cycles"] = session.cycles(args.incremental_cycles, label="steady cycle")
    part["cycle_refresh_s"] = incremental.median_refresh(part["cycles"])
    part["paired"] = incremental.paired(part["cycles"])
    session.drop_twin()
    part["listing_after_cycles"] = measure.listing(conn, args.listing_runs)
    log("one more cycle, with EXPLAIN ANALYZE of the refresh (not counted)")
    part["explained_cycle"] = session.explained_cycle()
    part["rate_cycles"] = []
    window = generate.spans_in_window(conn)
    for rate in args.rates:
        if rate * REFRESH_INTERVAL_SECONDS * 4 > window:
            log(f"no cycle at {rate:,} spans/s: it would replace over a quarter of the window")
            continue
        part["rate_cycles"] += session.cycles(1, rate, label="rate cycle")
    if part["rate_cycles"]:
        top = part["rate_cycles"][-1]["rate"]
        log(f"one more cycle at {top:,} spans/s, with EXPLAIN ANALYZE of the refresh (not counted)")
        part["explained_rate_cycle"] = session.explained_cycle(top)
    part["spans_in_window_after"] = generate.spans_in_window(conn)
    return part


def run(args: argparse.Namespace) -> dict:
    bench = clusters.start(major=args.pg_major, timescaledb=args.hypertable)
    url = bench.url
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "traces": args.traces,
        "store": hypertable.STORE if args.hypertable else "plain",
        "stages": [],
        "code": code_facts(),
        "options": {key: str(value) for key, value in vars(args).items()},
    }
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            results["server"] = server_facts(conn)
            if args.hypertable:
                results["timescaledb"] = hypertable.prepare(conn)
            alembic(url, "upgrade", "00000000000001")
            if args.hypertable:
                hypertable.enable_compression(conn)
            session = incremental.Session(conn, args.traces, log, bounded=args.hypertable)
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
                if args.hypertable:
                    compressed = hypertable.compress_old_chunks(conn)
                    log(f"compressed {compressed['compressed_now']} chunks older than a day in "
                        f"{compressed['seconds']:.1f}s: {compressed}")  # fmt: skip
                conn.execute("VACUUM ANALYZE otel_traces")
                if not results["stages"]:
                    log("alembic upgrade head (first stage)")
                    results["first_migration_s"] = upgrade_head(url, conn)
                spans = generate.spans_in_window(conn)
                timings = measure.alternated_medians(
                    conn,
                    {"concurrent": "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries"},
                    args.rounds,
                    progress=log,
                )
                point: dict = {
                    "traces": stage,
                    "spans_in_window": spans,
                    "concurrent_refresh_s": timings["concurrent"]["median_s"],
                    "concurrent_refresh_runs_s": timings["concurrent"]["runs_s"],
                }
                if args.hypertable:
                    point["compression"] = compressed
                if stage != stages[-1]:  # at N: the incremental part, after the view's
                    point["incremental"] = incremental_stage(url, conn, session, args.stage_cycles)
                    point["incremental_cycle_s"] = point["incremental"]["cycle_refresh_s"]
                    point["incremental_paired"] = point["incremental"]["paired"]
                results["stages"].append(point)
            results["spans_in_window"] = results["stages"][-1]["spans_in_window"]
            results["spans_total"] = conn.execute("SELECT count(*) FROM otel_traces").fetchone()[0]

            log("migration over the full data: alembic downgrade -1, then timed upgrade head")
            alembic(url, "downgrade", "-1")
            results["migration_s"] = upgrade_head(url, conn)
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
            for name in measure.LISTING_QUERIES:
                log(f"listing query {name}: {args.listing_runs} runs on the view")
                on_view = measure.listing(conn, args.listing_runs, names=[name])[name]
                if args.skip_live_listing:
                    results["listing"][name] = {"view": on_view, "live": None, "speedup_p50": None}
                    continue
                log(f"listing query {name}: up to {args.live_runs} runs computed live")
                on_live = measure.listing(
                    conn, args.live_runs, live, [name], budget_seconds=args.live_budget
                )[name]
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
            new_traces = view_cycle_traces(args.traces)
            cycles = []
            for cycle in range(1, args.cycles + 1):
                conn.execute(NEW_SPANS_SQL, {"cycle": cycle, "traces": new_traces})
                conn.execute(LATE_SPANS_OF_NEWEST_TRACES_SQL, {"cycle": cycle})
                oldest = args.traces - (cycle - 1) * new_traces
                age_out(conn, oldest - new_traces + 1, oldest, args.hypertable)
                took = measure.seconds(
                    conn, "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries"
                )
                cycles.append({"cycle": cycle, "refresh_s": took, **measure.view_health(conn)})
                if cycle % 5 == 0 or cycle == 1:
                    log(f"cycle {cycle}: refresh {took:.2f}s, {cycles[-1]}")
            results["cycles"] = cycles

            if args.hypertable:
                results["chunks_after_view_cycles"] = hypertable.chunks(conn)
                log("compressing again what the view's cycles wrote into compressed chunks")
                results["compression_before_incremental"] = hypertable.compress_old_chunks(conn)
            results["incremental"] = incremental_part(url, conn, session, args)
            if args.hypertable:
                results["chunks_at_end"] = hypertable.chunks(conn)
            last = results["stages"][-1]
            last["incremental_cycle_s"] = results["incremental"]["cycle_refresh_s"]
            last["incremental_spans_in_window"] = results["incremental"]["spans_in_window"]
            last["incremental_paired"] = results["incremental"]["paired"]
    finally:
        if args.keep:
            log(f"cluster kept running: {url}")
        else:
            bench.remove()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["load_average_at_end"] = os.getloadavg()
    results["code_at_end"] = code_facts()
    if (
        results["code_at_end"]["src_and_alembic_sha256"]
        != results["code"]["src_and_alembic_sha256"]
    ):
        log(f"WARNING: src/ or alembic/ changed during the run: {results['code_at_end']}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="[bench %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    if argv[:1] == ["freshness"]:
        return freshness.main(argv[1:])
    command_line = parser()
    args = command_line.parse_args(argv)
    if (
        args.traces < 4
        or min(
            args.rounds, args.cycles, args.stage_cycles, args.incremental_cycles, args.ingest_rounds
        )
        < 1
    ):
        command_line.error("--traces must be at least 4, the rounds and cycles at least 1")

    if args.rewrite_report:
        for path in output.rewrite(args.out, REFRESH_INTERVAL_SECONDS):
            print(f"wrote {path}")
        return 0
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = output.write(results, args.out)
    print(report.capacity_line(results, REFRESH_INTERVAL_SECONDS))
    print(report.incremental_line(results))
    for path in paths:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
