"""Queries that read and refresh otel_trace_summaries.

Functions take an open psycopg connection and return plain data; printing is
the console command's job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cnpg_trace_summaries.schema import SUMMARIES_VIEW, SUMMARY_COLUMNS

log = logging.getLogger(__name__)

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


def refresh(conn: psycopg.Connection, *, concurrently: bool = True) -> float:
    """Refresh the view now; return the seconds it took. Needs autocommit off or on."""
    statement = "REFRESH MATERIALIZED VIEW {}{}".format(
        "CONCURRENTLY " if concurrently else "", qualified_view(conn)
    )
    started = time.monotonic()
    conn.execute(statement)
    if not conn.autocommit:
        conn.commit()
    elapsed = time.monotonic() - started
    log.info("%s took %.3f s", statement, elapsed)
    return elapsed
