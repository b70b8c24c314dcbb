"""Waiting for pg_cron to run a job for real (hurried: the shortest schedule it takes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from functools import partial

import psycopg

from cnpg_trace_summaries.pgcron import GRANTS_FOR_SCHEDULE_IN_DATABASE
from cnpg_trace_summaries.sql import cron as cron_sql
from tests.support.database import Database
from tests.support.roles import ROLE_PASSWORD, grant, login_role

TICK_TIMEOUT_SECONDS = 200

# What each mode's job runs, as deployed jobs hold it (pinned: changing it needs a revision).
JOB_COMMANDS = {
    "view": "REFRESH MATERIALIZED VIEW CONCURRENTLY {schema}.otel_trace_summaries",
    "incremental": "CALL {schema}.otel_trace_summaries_refresh"
    "(false, CAST(NULL AS pg_catalog.jsonb))",
}

# What an administrator grants `app` in pg_cron's database (the migration's own advice),
# with a {} for roles.grant to fill in.
SCHEDULE_GRANTS = GRANTS_FOR_SCHEDULE_IN_DATABASE.format(role="{}")

RUN_SQL = """
SELECT status, return_message, start_time, end_time FROM cron.job_run_details
WHERE jobid = %s AND (start_time > %s OR start_time IS NULL)
  AND status IN ('succeeded', 'failed')
ORDER BY runid LIMIT 1
"""


# The shortest schedule a pg_cron takes: seconds from 1.5 on, whole minutes before.
FASTEST_SCHEDULE_SQL = f"""
SELECT CASE WHEN {cron_sql.TAKES_SECONDS.format(version="extversion")}
            THEN '5 seconds' ELSE '* * * * *' END
FROM pg_extension WHERE extname = 'pg_cron'
"""
ALTER_SCHEDULE_SQL = "SELECT cron.alter_job(%s, schedule := %s)"


def hurry(connect: Callable[[], psycopg.Connection], jobid: int) -> None:
    """Run the job as installed (its command, role and database) as often as its pg_cron can:
    every 5 seconds from pg_cron 1.5 on, every minute before. ``connect``: as the superuser."""
    with connect() as conn:
        conn.execute(ALTER_SCHEDULE_SQL, (jobid, conn.execute(FASTEST_SCHEDULE_SQL).fetchone()[0]))


def first_run_after(connect: Callable[[], psycopg.Connection], jobid: int, after: datetime) -> dict:
    """The first finished run of ``jobid`` that started after ``after``.

    ``connect`` opens a connection to the database pg_cron lives in. A run that
    could not connect has no start_time, and counts.
    """
    deadline = time.monotonic() + TICK_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with connect() as conn:
            row = conn.execute(RUN_SQL, (jobid, after)).fetchone()
        if row:
            return dict(
                zip(("status", "return_message", "start_time", "end_time"), row, strict=True)
            )
        time.sleep(0.5)
    raise AssertionError(f"pg_cron did not run job {jobid} within {TICK_TIMEOUT_SECONDS}s")


def job_id(connect: Callable[[], psycopg.Connection], jobname: str) -> int | None:
    with connect() as conn:
        row = conn.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (jobname,)).fetchone()
    return row[0] if row else None


def jobs_named(database: Database, *names: str) -> dict[str, int]:
    """How many pg_cron jobs carry each name (``database`` is where pg_cron lives)."""
    with database.connect() as conn:
        return {
            name: conn.execute(
                "SELECT count(*) FROM cron.job WHERE jobname = %s", (name,)
            ).fetchone()[0]
            for name in names
        }


def job_command(database: Database, jobname: str) -> str | None:
    """The command of the pg_cron job ``jobname`` (``database`` is where pg_cron lives)."""
    return database.scalar("SELECT command FROM cron.job WHERE jobname = %s", (jobname,))


def app_database(stack: ExitStack, server, role: str | None = None) -> Database:
    """CNPG's layout: a database owned by a non-superuser login, which may schedule its job in
    the database pg_cron lives in (SCHEDULE_GRANTS, run there by the superuser).

    ``role``: the login's name (the same on two servers); a new random one by default.
    """
    role = stack.enter_context(login_role(server, databases=(server.cron_database,), name=role))
    name = f"app_{role}"
    server.create_database(name, owner=role)
    stack.callback(partial(server.drop_database, name))
    stack.callback(partial(unschedule_jobs_of, server, name))  # first: no job outlives its database
    grant(server, server.cron_database, SCHEDULE_GRANTS, role, role)
    return Database(server, name, user=role, password=ROLE_PASSWORD)


def unschedule_jobs_of(server, dbname: str) -> None:
    """Remove the pg_cron jobs that run in ``dbname`` (as the superuser, where pg_cron lives)."""
    with server.connect(server.cron_database, autocommit=True) as conn:
        conn.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s", (dbname,))
