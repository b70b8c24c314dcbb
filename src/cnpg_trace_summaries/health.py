"""Is otel_trace_summaries fresh? What ``trace-summaries status`` reports, in either mode.

It judges on what a monitoring system reads (:mod:`.sql.metrics`): the
metrics function of the summaries' schema, and the pg_cron query where pg_cron
lives; so the two never disagree. Stale means older than two refresh
intervals, the interval being the one the summaries' record names. It adds
what only a person needs: who holds a stuck lock, leftovers of an interrupted
switch, objects that shadow this project's, grants lost in a restore, and a
subscription that copies this project's own tables. No check scans a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from cnpg_trace_summaries import modes, pgcron
from cnpg_trace_summaries.contract import SUMMARIES, TRACES_TABLE, VERSION_TABLE
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql import incremental, lifecycle, metrics
from cnpg_trace_summaries.sql.render import SCHEMA_LITERAL
from cnpg_trace_summaries.summaries import broken_triggers

# Every routine this project creates in the schema, by name and identity arguments.
_OURS = [(r.name, r.arguments) for r in (*incremental.ROUTINES, metrics.METRICS)]
_OUR_NAMES = sorted({name for name, _ in _OURS})

# Routines in the schema named like one of ours that are not ours: another role's
# overload makes the job's CALL ambiguous (or worse, were it a better match).
FOREIGN_ROUTINES_SQL = f"""
WITH ours AS (
    SELECT to_regprocedure(format('%%I.%%I(%%s)', {SCHEMA_LITERAL}, name, arguments)) AS oid
    FROM unnest(CAST(%(names_ours)s AS text[]), CAST(%(arguments_ours)s AS text[]))
         AS routine(name, arguments)
)
SELECT format('%%s(%%s) owned by %%s', p.oid::regproc, pg_get_function_identity_arguments(p.oid),
              pg_get_userbyid(p.proowner))
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = {SCHEMA_LITERAL} AND p.proname = ANY (%(names)s)
  AND p.oid NOT IN (SELECT oid FROM ours WHERE oid IS NOT NULL)
ORDER BY 1
"""

# This project's routines that PUBLIC may execute (a restore with --no-privileges).
PUBLIC_ROUTINES_SQL = f"""
SELECT string_agg(p.proname, ', ' ORDER BY p.proname)
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = {SCHEMA_LITERAL} AND p.proname = ANY (%(names)s)
  AND has_function_privilege('public', p.oid, 'EXECUTE')
"""

# This project's own tables in a logical replication subscription (a FOR ALL TABLES
# publication on the other side): they must never be copied.
SUBSCRIBED_SQL = f"""
SELECT s.subname, string_agg(c.relname, ', ' ORDER BY c.relname)
FROM pg_subscription_rel AS r
JOIN pg_subscription AS s ON s.oid = r.srsubid
JOIN pg_class AS c ON c.oid = r.srrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = {SCHEMA_LITERAL} AND c.relname <> '{TRACES_TABLE}'
  AND (c.relname LIKE '{SUMMARIES}%%' OR c.relname = '{VERSION_TABLE}')
GROUP BY s.subname
"""

LOCK_HOLDER_SQL = f"SELECT {incremental.LOCK_HOLDER}"


@dataclass(frozen=True)
class Health:
    """What ``trace-summaries status`` reports."""

    checked_at: datetime
    mode: str
    refresh_interval: str
    metrics: dict  # a row of the metrics function
    cron: pgcron.Found
    cron_metrics: dict | None  # this schema's row of the pg_cron query, where readable
    lock_holder: dict | None
    problems: tuple[str, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def lag_seconds(self) -> float:
        return self.metrics["lag_seconds"] or 0.0

    @property
    def stale_after_seconds(self) -> float:
        return self.metrics["stale_after_seconds"]


def _cron_metrics(place: Place, found: pgcron.Found) -> dict | None:
    if found.job is None:
        return None
    try:
        with pgcron.cron_connection(place, found.location) as cron:
            rows = cron.cursor(row_factory=dict_row).execute(metrics.CRON_METRICS).fetchall()
    except psycopg.Error:
        return None
    return next((row for row in rows if row["job"] == found.job.jobname), None)


def health(place: Place, cron_database: str = "") -> Health:
    """Read the summaries' freshness; ``place`` is in autocommit."""
    found = modes.require(place.conn, place.schema)
    row = place.conn.cursor(row_factory=dict_row).execute(place.sql(metrics.QUERY)).fetchone()
    checked_at = place.one("SELECT now()")
    location = pgcron.locate(place, cron_database)
    cron = pgcron.find_job(place, location)
    cron_row = _cron_metrics(place, cron)
    holder = place.one(LOCK_HOLDER_SQL)
    report = Health(checked_at, found.mode.name, found.record.refresh_interval, row, cron,
                    cron_row, holder)  # fmt: skip
    return Health(**{**report.__dict__, "problems": tuple(_problems(place, report))})


def _problems(place: Place, report: Health) -> list[str]:
    m, stale_after = report.metrics, report.stale_after_seconds
    problems = []
    if not m["populated"]:
        problems.append("the summaries have never been populated")
    if m["lag_seconds"] > stale_after:
        problems.append(
            f"the summaries do not show a span written {m['lag_seconds']:.0f}s ago "
            f"(> {stale_after:.0f}s)"
        )
    holder = report.lock_holder
    if m["refresh_lock_stuck"]:
        problems.append(
            f"the refresh lock is held by pid {holder['pid']} (user {holder['user']}, "
            f"application_name {holder['application_name'] or 'none'}, "
            f"{holder['state'] or 'state hidden'} since {holder['since']}), which is not "
            "refreshing: no refresh runs until it ends "
            f"(SELECT pg_terminate_backend({holder['pid']}))"
        )
    if report.mode == "incremental":
        problems += _incremental_problems(place, m, stale_after)
    problems += _cron_problems(report, stale_after)
    next_left, machinery_left = place.execute(lifecycle.LEFTOVERS_SQL).fetchone()
    left = [lifecycle.NEXT] if next_left else []
    if not modes.MODES[report.mode].machinery and machinery_left:
        left.append("the incremental mode's triggers and tables")
    if left:
        problems.append(
            f"an interrupted switch left {' and '.join(left)}: "
            f"run `trace-summaries switch {report.mode}` to remove it"
        )
    names = {"names": _OUR_NAMES}
    for routine in place.execute(FOREIGN_ROUTINES_SQL, {
        **names,
        "names_ours": [name for name, _ in _OURS],
        "arguments_ours": [arguments for _, arguments in _OURS],
    }).fetchall():  # fmt: skip
        problems.append(
            f"{routine[0]} shares a name with this project's routines in schema "
            f"{place.schema}: the job's call may fail as ambiguous; drop it"
        )
    public = place.one(PUBLIC_ROUTINES_SQL, names)
    if public:
        problems.append(
            f"PUBLIC may execute {public} (grants lost in a restore?): run `trace-summaries repair`"
        )
    for subscription, tables in place.execute(SUBSCRIBED_SQL).fetchall():
        problems.append(
            f"subscription {subscription} copies this project's own tables ({tables}): publish "
            "otel_traces only (CREATE PUBLICATION ... FOR TABLE otel_traces), then refresh the "
            "subscription; each database keeps its own summaries"
        )
    return problems


def _incremental_problems(place: Place, m: dict, stale_after: float) -> list[str]:
    problems = []
    if not m["capture_enabled"]:
        problems.append(
            f"changes to otel_traces are not being captured: {broken_triggers(place)} missing or "
            "not firing; run `trace-summaries repair`, then `trace-summaries refresh --full`"
        )
    if m["rebuild_pending"] and (m["rebuild_pending_seconds"] or 0) > stale_after:
        problems.append(
            f"a full rebuild has been pending for {m['rebuild_pending_seconds']:.0f}s "
            "(`trace-summaries verify` says why; the next refresh does it)"
        )
    age = m["last_refresh_age_seconds"]
    if (age if age is not None else m["installed_age_seconds"]) > stale_after:
        skipped = (
            f"; {m['skipped_refreshes']:.0f} refreshes were skipped since, another refresher "
            "holding the lock"
            if m["skipped_refreshes"]
            else ""
        )
        problems.append(
            f"no incremental refresh has finished in the last {stale_after:.0f}s "
            f"(last: {'never' if age is None else f'{age:.0f}s ago'}){skipped}"
        )
    return problems


def _cron_problems(report: Health, stale_after: float) -> list[str]:
    cron, row = report.cron, report.cron_metrics
    if cron.missing:
        return [
            f"pg_cron is in database {cron.location.database}, but the job "
            f'"{cron.location.facts["job_name"]}" is missing: run `trace-summaries repair` '
            "to schedule it again"
        ]
    job = cron.job
    if job is None:
        return []
    problems = []
    if not job.active:
        problems.append(f"pg_cron job {job.jobid} is inactive")
    if cron.last_run is not None and cron.last_run.status == "failed":
        problems.append(f"the last pg_cron run failed: {cron.last_run.message.strip()}")
    success_age = row and row["last_success_age_seconds"]
    if success_age is not None and success_age > stale_after:
        problems.append(
            f"the last successful refresh was {success_age:.0f}s ago (> {stale_after:.0f}s, "
            f"{metrics.STALE_INTERVALS} intervals of {report.refresh_interval})"
        )
    installed_age = report.metrics["installed_age_seconds"]
    if cron.last_success_at is None and installed_age > stale_after:
        problems.append(
            f"pg_cron job {job.jobid} has never succeeded (stale after {stale_after:.0f}s, "
            f"{metrics.STALE_INTERVALS} intervals of {report.refresh_interval}; "
            f"installed {installed_age:.0f}s ago)"
        )
    return problems
