"""The incremental mode's part of the benchmark: switching, steady-state cycles, full rebuilds.

A steady-state cycle is two minutes of a store that takes ``rate`` spans per
second, replayed as fast as the server goes (the cycles run back to back):

1. ``rate * 120`` new spans (new traces of 10 spans each) in 1,000-row
   ``INSERT`` statements, each its own transaction, as a collector writes them;
2. 50 late spans of older traces (a late error, timestamped in its trace's time);
3. the spans that leave the window: time does not pass by two minutes between
   two cycles here, so leaving is simulated by deleting as many of the oldest
   spans in the window as came in (a steady state: the window keeps its size).
   Their traces are recomputed through the dirty keys that the delete trigger
   writes, exactly the work that spans crossing the boundary cost (the same
   traces, found by the refresh's range scan of the boundary instead);
4. the real window boundary moves too, by the wall time of the cycle: a band of
   spans at the data's own density lies just inside the boundary (see
   :func:`add_boundary_band`), and those that cross it in a cycle are recomputed
   through the refresh's boundary scan;
5. ``CALL otel_trace_summaries_refresh()``, timed: the figure;
6. :func:`cnpg_trace_summaries.summaries.verify` right after it: the table must
   equal the definition at the stored window boundary, at one snapshot, with no
   change left pending.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import psycopg

from bench import hypertable
from bench.workload import (
    BAND_CHUNK_TRACES,
    BAND_SECONDS,
    LATE_SPANS,
    LOADED_DAYS,
    RATE,
    ROWS_PER_STATEMENT,
    SCOPE_NAME,
    SCOPE_VERSION,
    SERVICE_VERSION,
    SERVICES,
    SPAN_COLUMN_LIST,
    SPANS_PER_TRACE,
    span_tail_sql,
)
from cnpg_trace_summaries import summaries
from cnpg_trace_summaries.contract import (
    DIRTY_TABLE,
    REFRESH_INTERVAL_SECONDS,
    STATE_TABLE,
    SUMMARIES,
    WINDOW,
)
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql.common import STORAGE, create_indexes
from cnpg_trace_summaries.sql.render import for_schema, qualified
from cnpg_trace_summaries.sql.summary import window_query

# The values of one generated span (in SPAN_COLUMN_LIST's order), shared by the
# cycle's and the band's statements: trace i of tag, span s (0 = root), starting
# at "started".
_SPAN_VALUES = f"""started + s * interval '3 milliseconds',
    md5(%(tag)s || '.' || i),
    left(md5(%(tag)s || '.' || i || '.' || s), 16),
    CASE WHEN s = 0 THEN NULL ELSE left(md5(%(tag)s || '.' || i || '.' || ((s - 1) / 2)), 16) END,
    CASE WHEN s = 0 THEN 'GET /api/v1/' || (i %% 17) ELSE 'rpc.call-' || (s %% 5) END,
    CASE WHEN s = 0 THEN 2 WHEN s %% 2 = 1 THEN 3 ELSE 2 END,
    CAST(extract(epoch FROM started) * 1e9 AS bigint) + s * 3000000,
    CAST(extract(epoch FROM started) * 1e9 AS bigint) + s * 3000000 + (20 - s) * 1500000,
    {span_tail_sql("i", str(SPANS_PER_TRACE - 1))}"""

# One 1,000-row INSERT: traces first..last of this cycle, 10 spans each, just now.
NEW_TRACES_SQL = f"""
INSERT INTO otel_traces ({SPAN_COLUMN_LIST})
SELECT {_SPAN_VALUES}
FROM generate_series(CAST(%(first)s AS integer), CAST(%(last)s AS integer)) AS i
CROSS JOIN LATERAL (
    SELECT now() - interval '20 seconds' + i * interval '1 millisecond' AS started
) AS t
CROSS JOIN generate_series(0, {SPANS_PER_TRACE - 1}) AS s
"""

# Traces just inside the window boundary, evenly spaced over the next
# %(seconds)s seconds of it, %(gap)s seconds apart.
BAND_SQL = f"""
INSERT INTO otel_traces ({SPAN_COLUMN_LIST})
SELECT {_SPAN_VALUES}
FROM generate_series(CAST(%(first)s AS integer), CAST(%(last)s AS integer)) AS i
CROSS JOIN LATERAL (
    SELECT CAST(%(start)s AS timestamptz)
           + i * CAST(%(gap)s AS double precision) * interval '1 second' AS started
) AS t
CROSS JOIN generate_series(0, {SPANS_PER_TRACE - 1}) AS s
"""

# Late error spans of %(late)s older traces: traces picked at random among the
# summaries whose last span came before this cycle, timestamped in their time
# (not the view's cycles' late spans: see __main__.LATE_SPANS_OF_NEWEST_TRACES_SQL).
LATE_SPANS_OF_RANDOM_TRACES_SQL = f"""
INSERT INTO otel_traces ({SPAN_COLUMN_LIST})
SELECT o."timestamp" + g * interval '1 microsecond', o.trace_id,
       left(md5(%(tag)s || '.late.' || g), 16), o.root_span_id, 'late.db', 3,
       o.start_time_unix_nano + 1000, o.start_time_unix_nano + 2000000, 'inventory',
       '{SERVICE_VERSION}', 'pod-late', '{SCOPE_NAME}', '{SCOPE_VERSION}', 2, 'late error',
       '{{}}', '{{}}', '[]', '[]'
FROM generate_series(1, %(late)s) AS g
CROSS JOIN LATERAL (
    SELECT trace_id, "timestamp", root_span_id, start_time_unix_nano
    FROM {SUMMARIES}
    WHERE trace_id >= md5(%(tag)s || '.pick.' || g) AND "timestamp" < %(before)s
    ORDER BY trace_id
    LIMIT 1
) AS o
"""

# The oldest %(n)s spans of the window above %(floor)s (the band's end): "the
# spans that leave the window" of a cycle, as time does not pass here.
OLDEST_UPPER_SQL = """SELECT "timestamp" FROM otel_traces WHERE "timestamp" > %(floor)s
                      ORDER BY "timestamp" OFFSET %(n)s - 1 LIMIT 1"""
DELETE_OLDEST_SQL = f"""
DELETE FROM otel_traces
WHERE "timestamp" > %(floor)s
  AND "timestamp" <= ({OLDEST_UPPER_SQL})
"""
# The same on a hypertable, its bounds added as literals (Session.delete_oldest).
DELETE_SPANS_SQL = """DELETE FROM otel_traces WHERE "timestamp" > %(floor)s"""

# The view's twin: the view's definition, storage and indexes under another name,
# built beside the incremental table, so that each cycle's data is also
# refreshed the view's way (REFRESH MATERIALIZED VIEW CONCURRENTLY) right after
# the incremental refresh and its comparison: the two refreshes of a cycle see
# the same data and the same load on the machine. Dropped before switching back.
TWIN = "bench_view_twin"


def switch(url: str, mode: str) -> dict:
    """``trace-summaries switch <mode>``, timed; the build and swap times it prints."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cnpg_trace_summaries.cli", "switch", mode, "--json"],
        env=dict(os.environ, DATABASE_URL=url),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"trace-summaries switch {mode} failed: {result.stderr.strip()}")
    report = json.loads(result.stdout)
    return {
        "to": mode,
        "command_s": wall,
        "build_s": report["build_seconds"],
        "swap_ms": round(report["swap_seconds"] * 1000),
        "output": result.stdout.strip(),
    }


def unschedule(conn: psycopg.Connection) -> None:
    """The benchmark refreshes by itself: no pg_cron job may refresh in the middle."""
    conn.execute(
        "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'otel_trace_summaries:%'"
    )


SCHEMA = "public"


def data_density(traces: int) -> float:
    """Spans per second of timestamps in the loaded data (about 10 spans per trace)."""
    return traces * SPANS_PER_TRACE / (LOADED_DAYS * 86_400)


def here(conn: psycopg.Connection) -> Place:
    """``conn`` as the package's functions take it: the benchmark's summaries are in public."""
    return Place(conn, SCHEMA)


def refresh(conn: psycopg.Connection, *, full: bool = False) -> tuple[float, dict]:
    """One ``CALL otel_trace_summaries_refresh()`` (summaries.refresh): seconds and its outcome."""
    outcome = summaries.refresh(here(conn), full=full)
    if not outcome.refreshed:
        raise RuntimeError(f"the refresh did not run: {outcome.detail}")
    return outcome.seconds, outcome.detail


def verify(conn: psycopg.Connection) -> dict:
    """The table against its definition at one snapshot (summaries.verify), timed."""
    started = time.perf_counter()
    result = summaries.verify(here(conn))
    return {
        "exact": bool(result.exact and result.pending_keys == 0),
        "rows": result.rows,
        "pending_keys": result.pending_keys,
        "missing": result.missing,
        "unexpected": result.unexpected,
        "examples": list(result.examples),
        "note": result.note,
        "seconds": time.perf_counter() - started,
    }


def table_facts(conn: psycopg.Connection) -> dict:
    row = conn.execute(
        "SELECT pg_total_relation_size(relid), pg_relation_size(relid), n_live_tup, n_dead_tup, "
        "autovacuum_count FROM pg_stat_user_tables WHERE relid = %s::regclass",
        (SUMMARIES,),
    ).fetchone()
    return dict(
        zip(("total_bytes", "heap_bytes", "live_rows_est", "dead_rows_est", "autovacuums"), row,
            strict=True)
    )  # fmt: skip


class Session:
    """The incremental mode on the benchmark's database: cycles, each verified."""

    def __init__(
        self,
        conn: psycopg.Connection,
        traces: int,
        log: Callable[[str], None],
        *,
        bounded: bool = False,
    ):
        self.conn = conn
        self.traces = traces
        self.log = log
        self.bounded = bounded  # deletes with literal time bounds (a hypertable)
        self.serial = 0  # a unique tag per batch of generated traces
        self.band_end: datetime | None = None
        self.twin = False

    def create_twin(self) -> float:
        """The view, under another name, beside the incremental table: see :data:`TWIN`."""
        started = time.perf_counter()
        for statement in (
            f"CREATE MATERIALIZED VIEW {qualified(TWIN)} WITH {STORAGE} AS "
            f"{window_query()} WITH DATA",
            *create_indexes(TWIN, "_twin"),
            f"ANALYZE {qualified(TWIN)}",
        ):
            self.conn.execute(for_schema(statement, SCHEMA))
        self.twin = True
        return time.perf_counter() - started

    def drop_twin(self) -> None:
        self.conn.execute(f"DROP MATERIALIZED VIEW IF EXISTS {TWIN}")
        self.twin = False

    def tag(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}{self.serial}.{os.getpid()}"

    def add_boundary_band(self, seconds: float = BAND_SECONDS) -> dict:
        """Spans just inside the window boundary, at the data's own density.

        The loaded data ends LOADED_DAYS back; this band fills the next ``seconds``
        of the boundary's way, so that the real boundary, moving with the wall
        clock, crosses spans in every cycle. Then one refresh takes them in.
        """
        density = data_density(self.traces)
        traces = max(1, round(density * seconds / SPANS_PER_TRACE))
        start = self.conn.execute(
            f"SELECT now() - interval '{WINDOW}' + interval '5 seconds'"
        ).fetchone()[0]
        gap = seconds / traces
        tag = self.tag("band")
        for first in range(1, traces + 1, BAND_CHUNK_TRACES):
            self.conn.execute(
                BAND_SQL,
                {"tag": tag, "first": first, "last": min(traces, first + BAND_CHUNK_TRACES - 1),
                 "start": start, "gap": gap, "services": list(SERVICES)},
            )  # fmt: skip
        end = self.conn.execute(
            "SELECT CAST(%s AS timestamptz) + %s * interval '1 second'", (start, seconds + gap)
        ).fetchone()[0]
        self.band_end = max(self.band_end, end) if self.band_end else end
        took, outcome = refresh(self.conn)
        return {
            "spans": traces * SPANS_PER_TRACE,
            "seconds_of_boundary": seconds,
            "spans_per_second": density,
            "refresh_s": took,
            "refresh": outcome,
        }

    def delete_oldest(self, spans: int) -> int:
        """:data:`DELETE_OLDEST_SQL`; with ``bounded``, its upper bound found first and both
        bounds given as literals (hypertable.bounded: TimescaleDB then decompresses only the
        compressed batches in that range)."""
        params = {"floor": self.band_end, "n": spans}
        if not self.bounded:
            return self.conn.execute(DELETE_OLDEST_SQL, params).rowcount
        found = self.conn.execute(OLDEST_UPPER_SQL, params).fetchone()
        if found is None:
            return 0
        statement = hypertable.bounded(DELETE_SPANS_SQL, self.band_end, found[0])
        return self.conn.execute(statement, {"floor": self.band_end}).rowcount

    def boundary(self) -> datetime:
        return self.conn.execute(f"SELECT window_boundary FROM {STATE_TABLE}").fetchone()[0]

    def cycle(self, rate: int = RATE) -> dict:
        """One steady-state cycle of ``rate`` spans per second; see the module's docstring."""
        conn = self.conn
        before = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        boundary_before = self.boundary()
        new_spans = rate * REFRESH_INTERVAL_SECONDS
        new_traces = new_spans // SPANS_PER_TRACE
        per_statement = ROWS_PER_STATEMENT // SPANS_PER_TRACE
        tag = self.tag("cycle")
        services = list(SERVICES)
        started = time.perf_counter()
        statements = 0
        for first in range(1, new_traces + 1, per_statement):
            last = min(new_traces, first + per_statement - 1)
            conn.execute(
                NEW_TRACES_SQL, {"tag": tag, "first": first, "last": last, "services": services}
            )
            statements += 1
        insert_s = time.perf_counter() - started

        started = time.perf_counter()
        late = conn.execute(
            LATE_SPANS_OF_RANDOM_TRACES_SQL, {"tag": tag, "late": LATE_SPANS, "before": before}
        ).rowcount
        late_s = time.perf_counter() - started

        started = time.perf_counter()
        deleted = self.delete_oldest(new_spans)
        delete_s = time.perf_counter() - started

        dirty_rows = conn.execute(f"SELECT count(*) FROM {DIRTY_TABLE}").fetchone()[0]
        refresh_s, outcome = refresh(conn)
        boundary_after = self.boundary()
        crossed = conn.execute(
            'SELECT count(*) FROM otel_traces WHERE "timestamp" > %s AND "timestamp" <= %s '
            "AND trace_id <> ''",
            (boundary_before, boundary_after),
        ).fetchone()[0]
        record = {
            "rate": rate,
            "new_spans": new_spans,
            "insert_statements": statements,
            "insert_s": insert_s,
            "late_spans": late,
            "late_s": late_s,
            "deleted_spans": deleted,
            "delete_s": delete_s,
            "dirty_rows": dirty_rows,
            "boundary_moved_s": (boundary_after - boundary_before).total_seconds(),
            "crossed_spans": crossed,
            "refresh_s": refresh_s,
            "refresh": outcome,
            **table_facts(conn),
        }
        record["verify"] = verify(conn)
        if not record["verify"]["exact"]:
            self.log(f"NOT EXACT after a cycle: {record['verify']}")
        if self.twin:
            started = time.perf_counter()
            conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {TWIN}")
            record["twin_view_refresh_s"] = time.perf_counter() - started
        return record

    def explained_cycle(self, rate: int = RATE) -> dict:
        """One more cycle, with EXPLAIN (ANALYZE, BUFFERS) of the refresh's main statement.

        auto_explain logs the statements the refresh procedure runs, as NOTICEs to
        this session; the one that claims, recomputes and applies is kept, without
        its query text. Instrumented, so its time is not one of the figures.
        """
        notices: list[str] = []

        def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
            notices.append(diagnostic.message_primary or "")

        conn = self.conn
        conn.add_notice_handler(keep)
        try:
            conn.execute("LOAD 'auto_explain'")
            for setting, value in (("log_analyze", "on"), ("log_buffers", "on"),
                                   ("log_nested_statements", "on"), ("log_level", "notice"),
                                   ("log_min_duration", "0")):  # fmt: skip
                conn.execute(f"SET auto_explain.{setting} = {value}")
            record = self.cycle(rate)
        finally:
            conn.execute("SET auto_explain.log_min_duration = -1")
            conn.remove_notice_handler(keep)
        plans = []
        for notice in notices:
            if "CTE claimed" not in notice:
                continue
            lines = notice.splitlines()
            first = next(i for i, line in enumerate(lines) if re.match(r"^\S.*\(cost=", line))
            plans.append("\n".join([lines[0], *lines[first:]]))
        return {"cycle": record, "plan": "\n\n".join(plans)}

    def cycles(self, count: int, rate: int = RATE, label: str = "cycle") -> list[dict]:
        done = []
        for number in range(1, count + 1):
            record = {"cycle": number, **self.cycle(rate)}
            done.append(record)
            check = record["verify"]
            twin = record.get("twin_view_refresh_s")
            self.log(
                f"{label} {number}/{count} at {rate:,} spans/s: refresh {record['refresh_s']:.3f}s "
                f"({record['refresh']['kind']}, {record['refresh'].get('keys', '-')} traces), "
                f"insert {record['insert_s']:.1f}s, "
                f"delete {record['delete_s']:.1f}s, {record['crossed_spans']} spans crossed; "
                f"verify {'EXACT' if check['exact'] else 'DIFFERS'} "
                f"({check['rows']:,} rows, {check['pending_keys']} pending, "
                f"{check['seconds']:.1f}s)" + (f"; the view's twin: {twin:.2f}s" if twin else "")
            )
        return done


def median_refresh(cycles: list[dict]) -> float:
    return statistics.median(c["refresh_s"] for c in cycles)


def paired(cycles: list[dict]) -> dict | None:
    """The view's twin against the incremental refresh, cycle by cycle: medians and ratio."""
    pairs = [
        (c["twin_view_refresh_s"], c["refresh_s"]) for c in cycles if "twin_view_refresh_s" in c
    ]
    if not pairs:
        return None
    return {
        "cycles": len(pairs),
        "view_refresh_s": statistics.median(view for view, _ in pairs),
        "incremental_refresh_s": statistics.median(inc for _, inc in pairs),
        "ratio": statistics.median(view / inc for view, inc in pairs),
    }


def full_rebuilds(conn: psycopg.Connection, log: Callable[[str], None]) -> dict:
    """The full rebuild, over a table that is already exact and into an empty one."""
    took, outcome = refresh(conn, full=True)
    log(f"full rebuild over the exact table: {took:.2f}s, {outcome.get('ranges')} ranges")
    unchanged = {"seconds": took, "outcome": outcome}
    conn.execute(f"TRUNCATE {SUMMARIES}")
    took, outcome = refresh(conn, full=True)
    conn.execute(f"ANALYZE {SUMMARIES}")
    log(f"full rebuild into the emptied table: {took:.2f}s, {outcome.get('ranges')} ranges")
    return {
        "over_exact_table": unchanged,
        "from_empty": {"seconds": took, "outcome": outcome},
        "verify": verify(conn),
    }
