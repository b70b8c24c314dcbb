"""Queries that read and refresh otel_trace_summaries.

Functions take an open psycopg connection and return plain data; printing is
the console command's job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cnpg_trace_summaries.schema import SUMMARIES_VIEW, SUMMARY_COLUMNS

NEWEST_SQL = f"""
SELECT {", ".join(f'"{column}"' for column in SUMMARY_COLUMNS)}
FROM {SUMMARIES_VIEW}
ORDER BY "timestamp" DESC
LIMIT %s
"""

# The migration names the job after the database and schema it refreshes.
JOB_SQL = """
SELECT jobid, jobname, schedule, command, database, username, active
FROM cron.job
WHERE jobname = left(format('otel_trace_summaries:%s.%s', current_database(), current_schema()), 63)
"""


@dataclass(frozen=True)
class RefreshJob:
    jobid: int
    jobname: str
    schedule: str
    command: str
    database: str
    username: str
    active: bool


def newest(conn: psycopg.Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` most recently active traces, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(NEWEST_SQL, (limit,)).fetchall()


def has_pg_cron(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    return row is not None


def refresh_job(conn: psycopg.Connection) -> RefreshJob | None:
    """The pg_cron job that refreshes the view, or None (no pg_cron, or no job)."""
    if not has_pg_cron(conn):
        return None
    row = conn.execute(JOB_SQL).fetchone()
    return RefreshJob(*row) if row else None


def qualified_view(conn: psycopg.Connection) -> str:
    """``schema.otel_trace_summaries`` as the server quotes it."""
    return conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)",
        (SUMMARIES_VIEW,),
    ).fetchone()[0]


# -- health -------------------------------------------------------------------
LAST_RUNS_SQL = """
SELECT status, return_message, start_time, end_time
FROM cron.job_run_details
WHERE jobid = %s AND status IN ('succeeded', 'failed')
ORDER BY runid DESC
LIMIT 1
"""

LAST_SUCCESS_SQL = """
SELECT end_time FROM cron.job_run_details
WHERE jobid = %s AND status = 'succeeded'
ORDER BY runid DESC
LIMIT 1
"""

VIEW_FACTS_SQL = """
SELECT m.ispopulated,
       pg_total_relation_size(c.oid),
       now()
FROM pg_matviews m
JOIN pg_class c ON c.oid = to_regclass('otel_trace_summaries')
WHERE m.schemaname = current_schema() AND m.matviewname = 'otel_trace_summaries'
"""


@dataclass(frozen=True)
class LastRun:
    status: str
    message: str
    started_at: datetime
    finished_at: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Health:
    """What ``trace-summaries status`` reports."""

    checked_at: datetime
    populated: bool
    rows: int
    size_bytes: int
    newest_in_view: datetime | None
    newest_span: datetime | None
    job: RefreshJob | None
    last_run: LastRun | None
    last_success_at: datetime | None
    stale_after_seconds: float
    problems: tuple[str, ...]

    @property
    def lag_seconds(self) -> float:
        """How far the view's newest trace trails the newest span in the window."""
        if self.newest_span is None:
            return 0.0
        if self.newest_in_view is None:
            return (self.checked_at - self.newest_span).total_seconds()
        return max(0.0, (self.newest_span - self.newest_in_view).total_seconds())

    @property
    def healthy(self) -> bool:
        return not self.problems


def health(conn: psycopg.Connection, schedule_seconds: float = 120) -> Health:
    """Read the view's freshness: pg_cron's record where it is, the data's lag always.

    Stale means older than twice the schedule: the last successful pg_cron run
    ended longer ago than that, or the newest span in the window is that much
    newer than the newest trace in the view.
    """
    facts = conn.execute(VIEW_FACTS_SQL).fetchone()
    if facts is None:
        raise LookupError("otel_trace_summaries does not exist in this database")
    populated, size_bytes, checked_at = facts
    rows, newest_in_view = (0, None)
    if populated:
        rows, newest_in_view = conn.execute(
            'SELECT count(*), max("timestamp") FROM otel_trace_summaries'
        ).fetchone()
    newest_span = conn.execute(
        'SELECT max("timestamp") FROM otel_traces '
        'WHERE "timestamp" > now() - interval \'7 days\' AND "timestamp" <= now() '
        "AND trace_id <> ''"
    ).fetchone()[0]
    job = refresh_job(conn)
    last_run = last_success_at = None
    if job is not None:
        row = conn.execute(LAST_RUNS_SQL, (job.jobid,)).fetchone()
        last_run = LastRun(*row) if row else None
        success = conn.execute(LAST_SUCCESS_SQL, (job.jobid,)).fetchone()
        last_success_at = success[0] if success else None

    stale_after = 2 * schedule_seconds
    problems: list[str] = []
    if not populated:
        problems.append("the view has never been populated")
    if job is not None and not job.active:
        problems.append(f"pg_cron job {job.jobid} is inactive")
    if last_run is not None and last_run.status == "failed":
        problems.append(f"the last pg_cron run failed: {last_run.message.strip()}")
    if last_success_at is not None:
        age = (checked_at - last_success_at).total_seconds()
        if age > stale_after:
            problems.append(f"last successful refresh was {age:.0f}s ago (> {stale_after:.0f}s)")
    result = Health(
        checked_at=checked_at,
        populated=populated,
        rows=rows,
        size_bytes=size_bytes,
        newest_in_view=newest_in_view,
        newest_span=newest_span,
        job=job,
        last_run=last_run,
        last_success_at=last_success_at,
        stale_after_seconds=stale_after,
        problems=(),
    )
    if result.lag_seconds > stale_after:
        problems.append(
            f"the view trails the newest span by {result.lag_seconds:.0f}s (> {stale_after:.0f}s)"
        )
    return replace(result, problems=tuple(problems))


# -- refreshing ----------------------------------------------------------------
@dataclass(frozen=True)
class RefreshOutcome:
    refreshed: bool
    seconds: float
    reason: str = ""


def refresh_unless_running(conn: psycopg.Connection) -> RefreshOutcome:
    """One concurrent refresh, unless another refresher holds the advisory lock.

    The lock is transaction-scoped and keyed on the view's qualified name, so
    two ``trace-summaries refresh`` processes never overlap (pg_cron's own
    refresh simply queues behind the view's ExclusiveLock).
    """
    view = qualified_view(conn)
    started = time.monotonic()
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (view,)).fetchone()[0]
        if not got:
            return RefreshOutcome(False, 0.0, "another refresher holds the lock")
        conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
    return RefreshOutcome(True, time.monotonic() - started)
