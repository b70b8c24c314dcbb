"""Is otel_trace_summaries fresh? What ``trace-summaries status`` reports, in either mode.

It reads pg_cron's record of the job wherever pg_cron lives (this database,
or the one :func:`pgcron.locate` finds), the incremental mode's state row and
backlog, and the data's own lag. Stale means older than two intervals of the
schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg

from cnpg_trace_summaries import modes, pgcron
from cnpg_trace_summaries.contract import (
    DIRTY_TABLE,
    REFRESH_INTERVAL_SECONDS,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    WINDOW,
)
from cnpg_trace_summaries.summaries import broken_triggers, require_mode

JOB_SQL = """
SELECT jobid, jobname, schedule, command, database, username, active
FROM cron.job WHERE jobname = %s AND database = %s
"""

LAST_RUN_SQL = """
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

RELATION_SQL = f"""
SELECT coalesce(m.ispopulated, true), pg_total_relation_size(c.oid),
       obj_description(c.oid, 'pg_class'), now()
FROM pg_class AS c
LEFT JOIN pg_matviews AS m ON m.schemaname = current_schema() AND m.matviewname = c.relname
WHERE c.oid = to_regclass(format('%I.{SUMMARIES}', current_schema()))
"""

# The first span the summaries do not show yet: written after their newest trace.
FIRST_UNSEEN_SQL = f"""
SELECT min("timestamp") FROM {TRACES_TABLE}
WHERE "timestamp" > coalesce(%s, now() - interval '{WINDOW}') AND "timestamp" <= now()
  AND trace_id <> ''
"""

NEWEST_SPAN_SQL = f"""
SELECT max("timestamp") FROM {TRACES_TABLE}
WHERE "timestamp" > now() - interval '{WINDOW}' AND "timestamp" <= now() AND trace_id <> ''
"""

STATE_SQL = f"""
SELECT window_boundary, rebuild_requested, rebuild_requested_at, last_refresh_at, last_refresh_kind,
       last_refresh_seconds, last_refresh_keys, (SELECT count(*) FROM {DIRTY_TABLE})
FROM {STATE_TABLE}
"""

INSTALLED_AT = re.compile(r"installed at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


@dataclass(frozen=True)
class RefreshJob:
    jobid: int
    jobname: str
    schedule: str
    command: str
    database: str
    username: str
    active: bool


@dataclass(frozen=True)
class LastRun:
    status: str
    message: str
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None or self.started_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Incremental:
    """The incremental mode's own record of its refreshes."""

    window_boundary: datetime | None
    rebuild_requested: str | None
    rebuild_requested_at: datetime | None
    last_refresh_at: datetime | None
    last_refresh_kind: str | None
    last_refresh_seconds: float | None
    last_refresh_keys: int | None
    backlog: int


@dataclass(frozen=True)
class Health:
    """What ``trace-summaries status`` reports."""

    checked_at: datetime
    mode: str
    populated: bool
    rows: int
    size_bytes: int
    installed_at: datetime | None
    newest_in_view: datetime | None
    newest_span: datetime | None
    first_unseen: datetime | None
    cron_database: str | None
    cron_note: str
    job: RefreshJob | None
    last_run: LastRun | None
    last_success_at: datetime | None
    incremental: Incremental | None
    stale_after_seconds: float
    problems: tuple[str, ...]

    @property
    def lag_seconds(self) -> float:
        """How long the oldest span the summaries do not show yet has waited for them.

        Not the gap between the newest span and the newest trace: after a quiet
        spell that gap is large the moment a span arrives, though nothing is late.
        """
        if self.first_unseen is None:
            return 0.0
        return max(0.0, (self.checked_at - self.first_unseen).total_seconds())

    @property
    def healthy(self) -> bool:
        return not self.problems


def find_job(
    conn: psycopg.Connection, cron_database: str = ""
) -> tuple[RefreshJob | None, LastRun | None, datetime | None, str | None, str]:
    """This schema's refresh job, its last run and last success, where pg_cron lives.

    Returns (job, last run, last success, pg_cron's database, a note on how it
    was found or why not).
    """
    location = pgcron.locate(conn, cron_database)
    if location.database is None:
        return None, None, None, None, location.how
    name, database = location.facts["job_name"], location.facts["database"]
    try:
        cron = conn if location.here else pgcron.connect_to(conn, location.database)
    except psycopg.Error as error:
        return None, None, None, location.database, f"cannot read pg_cron's jobs: {error}"
    try:
        if cron.execute("SELECT to_regclass('cron.job')").fetchone()[0] is None:
            return None, None, None, location.database, "pg_cron's extension is not created"
        row = cron.execute(JOB_SQL, (name, database)).fetchone()
        if row is None:
            return None, None, None, location.database, location.how
        job = RefreshJob(*row)
        last = cron.execute(LAST_RUN_SQL, (job.jobid,)).fetchone()
        success = cron.execute(LAST_SUCCESS_SQL, (job.jobid,)).fetchone()
    except psycopg.Error as error:
        return None, None, None, location.database, f"cannot read pg_cron's jobs: {error}"
    finally:
        if cron is not conn:
            cron.close()
    return (
        job,
        LastRun(*last) if last else None,
        success[0] if success else None,
        location.database,
        location.how,
    )


def health(
    conn: psycopg.Connection,
    schedule_seconds: float = REFRESH_INTERVAL_SECONDS,
    cron_database: str = "",
) -> Health:
    """Read the summaries' freshness; ``conn`` is in autocommit."""
    mode = require_mode(conn)
    populated, size_bytes, comment, checked_at = conn.execute(RELATION_SQL).fetchone()
    rows, newest_in_view = (0, None)
    if populated:
        rows, newest_in_view = conn.execute(
            f'SELECT count(*), max("timestamp") FROM {SUMMARIES}'
        ).fetchone()
    newest_span = conn.execute(NEWEST_SPAN_SQL).fetchone()[0]
    first_unseen = conn.execute(FIRST_UNSEEN_SQL, (newest_in_view,)).fetchone()[0]
    found = INSTALLED_AT.search(comment or "")
    installed_at = datetime.fromisoformat(found.group(1).replace("Z", "+00:00")) if found else None
    incremental = None
    if mode == "incremental":
        incremental = Incremental(*conn.execute(STATE_SQL).fetchone())
    job, last_run, last_success_at, where, note = find_job(conn, cron_database)

    stale_after = 2 * schedule_seconds
    problems: list[str] = []

    def age(moment: datetime | None) -> float:
        return (checked_at - moment).total_seconds() if moment else float("inf")

    if not populated:
        problems.append("the view has never been populated")
    if job is not None and not job.active:
        problems.append(f"pg_cron job {job.jobid} is inactive")
    if last_run is not None and last_run.status == "failed":
        problems.append(f"the last pg_cron run failed: {last_run.message.strip()}")
    if last_success_at is not None and age(last_success_at) > stale_after:
        problems.append(
            f"the last successful refresh was {age(last_success_at):.0f}s ago "
            f"(> {stale_after:.0f}s)"
        )
    if job is not None and last_success_at is None and age(installed_at) > stale_after:
        since = "" if installed_at is None else f", installed {age(installed_at):.0f}s ago"
        problems.append(
            f"pg_cron job {job.jobid} has never succeeded (stale after {stale_after:.0f}s{since})"
        )
    if incremental is not None:
        broken = broken_triggers(conn)
        if broken:
            problems.append(
                f"changes to otel_traces are not being captured: {broken} missing or disabled; "
                "enable them, then `trace-summaries refresh --full`"
            )
        if incremental.rebuild_requested and age(incremental.rebuild_requested_at) > stale_after:
            problems.append(f"a full rebuild is pending: {incremental.rebuild_requested}")
        if age(incremental.last_refresh_at) > stale_after:
            problems.append(
                "no incremental refresh has finished in the last "
                f"{stale_after:.0f}s (last: {incremental.last_refresh_at or 'never'})"
            )
    next_left, machinery_left = conn.execute(modes.LEFTOVERS_SQL).fetchone()
    left = [modes.NEXT] if next_left else []
    if mode == "view" and machinery_left:
        left.append("the incremental mode's triggers and tables")
    if left:
        problems.append(
            f"an interrupted switch left {' and '.join(left)}: "
            f"run `trace-summaries switch {mode}` to remove it"
        )
    result = Health(
        checked_at=checked_at,
        mode=mode,
        populated=populated,
        rows=rows,
        size_bytes=size_bytes,
        installed_at=installed_at,
        newest_in_view=newest_in_view,
        newest_span=newest_span,
        first_unseen=first_unseen,
        cron_database=where,
        cron_note=note,
        job=job,
        last_run=last_run,
        last_success_at=last_success_at,
        incremental=incremental,
        stale_after_seconds=stale_after,
        problems=(),
    )
    if result.lag_seconds > stale_after:
        problems.append(
            f"the summaries do not show a span written {result.lag_seconds:.0f}s ago "
            f"(> {stale_after:.0f}s)"
        )
    return replace(result, problems=tuple(problems))
