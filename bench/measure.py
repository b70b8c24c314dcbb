"""What the benchmark measures, each a function of an open connection."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import psycopg

from bench.workload import IN_WINDOW
from cnpg_trace_summaries.contract import SUMMARIES

TIME_RANGE_QUERY = (
    "SELECT * FROM {source} WHERE timestamp > NOW() - INTERVAL '1 hour' "
    "ORDER BY timestamp DESC LIMIT 100"
)
SERVICE_QUERY = (
    "SELECT * FROM {source} WHERE root_service_name = 'checkout' ORDER BY timestamp DESC LIMIT 100"
)
LISTING_QUERIES = {"time_range": TIME_RANGE_QUERY, "service": SERVICE_QUERY}

# The comparison row: one pass, one GROUP BY, root columns picked column by
# column with max() FILTER (so they may come from different root spans).
NAIVE_DEFINITION = f"""
SELECT trace_id,
       max("timestamp") AS "timestamp",
       max(span_id) FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '') AS root_span_id,
       max(name) FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '') AS root_span_name,
       max(service_name) FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '')
           AS root_service_name,
       max(kind) FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '') AS root_span_kind,
       min(start_time_unix_nano) AS start_time_unix_nano,
       max(end_time_unix_nano) AS end_time_unix_nano,
       (max(end_time_unix_nano) - min(start_time_unix_nano)) / 1e6 AS duration_ms,
       max(status_code) FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '')
           AS status_code,
       max(status_message) FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '')
           AS status_message,
       array_agg(DISTINCT service_name) AS service_set,
       count(*) AS span_count,
       count(*) FILTER (WHERE status_code = 2) AS error_count
FROM otel_traces
WHERE {IN_WINDOW}
GROUP BY trace_id
"""

FLOOR_QUERY = (
    "SELECT trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, "
    f'end_time_unix_nano, service_name, status_code, status_message, "timestamp" '
    f"FROM otel_traces WHERE {IN_WINDOW}"
)


def seconds(conn: psycopg.Connection, statement: str) -> float:
    started = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency(
    conn: psycopg.Connection, query: str, runs: int, budget_seconds: float | None = None
) -> dict:
    """p50/p95 in milliseconds over ``runs`` executions (fewer if the budget runs out)."""
    conn.execute(query).fetchall()  # warm the cache and the prepared plan
    timings: list[float] = []
    started = time.monotonic()
    for _ in range(runs):
        t0 = time.perf_counter()
        conn.execute(query).fetchall()
        timings.append((time.perf_counter() - t0) * 1000)
        if budget_seconds and time.monotonic() - started > budget_seconds and len(timings) >= 5:
            break
    return {
        "runs": len(timings),
        "p50_ms": percentile(timings, 0.50),
        "p95_ms": percentile(timings, 0.95),
    }


def listing(
    conn: psycopg.Connection,
    runs: int,
    source: str = SUMMARIES,
    names: Iterable[str] = LISTING_QUERIES,
    budget_seconds: float | None = None,
) -> dict[str, dict]:
    """The latency of the spec's listing queries (all, or those ``names``) over ``source``."""
    return {
        name: latency(conn, LISTING_QUERIES[name].format(source=source), runs, budget_seconds)
        for name in names
    }


def alternated_medians(
    conn: psycopg.Connection,
    statements: dict[str, str],
    rounds: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Run each statement once per round, in turn, and report the median seconds."""
    timings: dict[str, list[float]] = {name: [] for name in statements}
    for round_number in range(rounds):
        for name, statement in statements.items():
            timings[name].append(seconds(conn, statement))
            if progress:
                progress(f"round {round_number + 1}/{rounds}: {name} {timings[name][-1]:.2f}s")
    return {
        name: {"median_s": statistics.median(values), "runs_s": values}
        for name, values in timings.items()
    }


def view_health(conn: psycopg.Connection, view: str = "otel_trace_summaries") -> dict:
    """Exact size, live and dead tuples of the view (pgstattuple), and its autovacuums."""
    row = conn.execute(
        "SELECT t.table_len, t.tuple_count, t.dead_tuple_count, "
        "       pg_total_relation_size(%s::regclass), s.autovacuum_count "
        "FROM pgstattuple(%s::regclass) AS t, pg_stat_user_tables AS s "
        "WHERE s.relid = %s::regclass",
        (view, view, view),
    ).fetchone()
    return dict(
        zip(
            ("heap_bytes", "live_rows", "dead_rows", "total_bytes", "autovacuums"), row, strict=True
        )
    )
