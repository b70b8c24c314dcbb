"""What alembic/env.py does around the revisions: session settings and the migration lock.

Migrations run while collectors write spans, often from two pods at once.
So every migration session

* waits at most ``lock_timeout`` for any lock on a live table,
* stops its server-side work when the ``alembic`` process dies
  (``client_connection_check_interval``, PostgreSQL 14 and later),
* shows up as ``cnpg-trace-summaries migration`` in ``pg_stat_activity``,
* and holds a session-level advisory lock, taken before the version table
  is read: a second migrator waits for the first (at most
  ``migration_lock_wait``), then finds nothing left to do. It waits by
  trying the lock again and again between short transactions, never inside
  one: a concurrent index build of the first migrator waits for every
  transaction older than itself, and would wait for a second migrator
  blocked inside a transaction, which waits for the first: a deadlock. While
  it waits its ``application_name`` says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg

from cnpg_trace_summaries import modes, options, pgcron
from cnpg_trace_summaries.contract import MIGRATION_LOCK_CLASS, PROJECT, SUMMARIES, lock_key_sql
from cnpg_trace_summaries.database import MigrationError
from cnpg_trace_summaries.interval import parse as parse_interval
from cnpg_trace_summaries.place import Place, pinned

APPLICATION_NAME = f"{PROJECT} migration"
WAITING_APPLICATION_NAME = f"{APPLICATION_NAME}: waiting for the migration lock"
# A dead alembic process is noticed within this, and its statement cancelled.
CLIENT_CHECK_INTERVAL = "1s"
# How often a waiting migrator tries the lock again.
POLL_SECONDS = 0.2

# For a --sql script (psql waits inside the statement; one script runs at a time).
LOCK_SQL = f"SELECT pg_advisory_lock({lock_key_sql(MIGRATION_LOCK_CLASS)})"
TRY_LOCK_SQL = f"SELECT pg_try_advisory_lock({lock_key_sql(MIGRATION_LOCK_CLASS, '%(schema)s')})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock({lock_key_sql(MIGRATION_LOCK_CLASS, '%(schema)s')})"

# Who holds the lock: advisory locks show their two int4 keys as oids.
HOLDER_SQL = f"""
SELECT a.pid, a.application_name, a.usename, a.client_addr,
       to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') AS since
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = {MIGRATION_LOCK_CLASS}
  AND l.objid = (CAST(hashtext(%(schema)s) AS bigint) + 4294967296) %% 4294967296
"""


class MigrationLockBusyError(Exception):
    """Another migrator kept the lock for longer than we were willing to wait."""


def offline_preamble(lock_timeout: str) -> list[str]:
    """The first statements of a ``--sql`` script: the same lock and lock_timeout."""
    return [f"SET lock_timeout = '{lock_timeout}'", LOCK_SQL]


def configure_session(conn: psycopg.Connection, lock_timeout: str) -> None:
    """lock_timeout, and a client check where the server has it (PostgreSQL 14+)."""
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (lock_timeout,))
    if conn.info.server_version >= 140000:
        conn.execute(f"SET client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'")
    conn.commit()


def current_schema(conn: psycopg.Connection) -> str:
    """The schema this migration works in: the first on the search_path that exists."""
    schema = conn.execute("SELECT pg_catalog.current_schema()").fetchone()[0]
    conn.commit()
    if schema is None:
        raise MigrationError(
            "no schema on the search_path exists in this database: create it, or set the "
            "search_path (DATABASE_URL's ?options=-csearch_path=SCHEMA) to one that does"
        )
    return schema


def _set_application_name(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_catalog.set_config('application_name', %s, false)", (name,))


@contextlib.contextmanager
def migration_lock(conn: psycopg.Connection, schema: str, *, wait: str) -> Iterator[None]:
    """Hold ``schema``'s migration lock for the block; wait at most ``wait`` for it.

    The lock is session-level, so it outlives the per-revision transactions;
    ``conn`` is outside any transaction when the block starts and between tries.
    """
    deadline = time.monotonic() + options.milliseconds(wait) / 1000
    application = None
    while not conn.execute(TRY_LOCK_SQL, {"schema": schema}).fetchone()[0]:
        if application is None:
            application = conn.execute("SHOW application_name").fetchone()[0]
            _set_application_name(conn, WAITING_APPLICATION_NAME)
        conn.commit()  # no transaction, so no snapshot, while it waits
        if time.monotonic() >= deadline:
            raise MigrationLockBusyError(_busy(conn, schema, wait))
        time.sleep(POLL_SECONDS)
    if application is not None:
        _set_application_name(conn, application)
    conn.commit()
    try:
        yield
    finally:
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
                conn.execute(UNLOCK_SQL, {"schema": schema})
                conn.commit()


def _busy(conn: psycopg.Connection, schema: str, wait: str) -> str:
    holder = conn.execute(HOLDER_SQL, {"schema": schema}).fetchone()
    conn.rollback()
    who = (
        f"pid {holder[0]}, {holder[1] or 'no application_name'}, "
        f"user {holder[2]}, connected since {holder[4]}"
        if holder
        else "it has just been released"
    )
    return (
        f"another migration of schema {schema} held the migration lock for longer than "
        f"{wait} ({who}); let it finish, or wait longer with -x migration_lock_wait=..."
    )


# -- after the revisions: what a person should know ------------------------------------------
def warnings(conn: psycopg.Connection, explicit: set[str], given: dict[str, str]) -> list[str]:
    """What to tell the person who ran the upgrade about the database as it now is.

    ``explicit``: the options given by -x or the environment; ``given``: their values.
    """
    try:
        with pinned(conn) as place:
            found = _installed(place)
            lines = [
                found and "summaries" in explicit and mode_mismatch(found, given["summaries"]),
                found
                and "refresh_interval" in explicit
                and interval_mismatch(found, given["refresh_interval"]),
                found
                and given.get("reader_role")
                and reader_role_warning(place, given["reader_role"]),
                found and job_missing_warning(place, given.get("cron_database", "")),
            ]
    finally:
        conn.rollback()
    return [line for line in lines if line]


def _installed(place: Place) -> modes.Installed | None:
    try:
        return modes.installed(place.conn, place.schema)
    except modes.NoRecordError as error:
        return _NoRecord(str(error))


class _NoRecord:
    """An installed relation without a record: said once, as a warning."""

    def __init__(self, message: str):
        self.message = message


def mode_mismatch(found, requested: str) -> str | None:
    """The summaries option chooses the mode of a new install; it never converts one."""
    if isinstance(found, _NoRecord):
        return found.message
    if found.mode.name == requested:
        return None
    return (
        f"otel_trace_summaries is installed in {found.mode.name} mode, not {requested}: the "
        "summaries option only chooses the mode of a new install; switch this one with "
        f"`trace-summaries switch {requested}`"
    )


def interval_mismatch(found, requested: str) -> str | None:
    if isinstance(found, _NoRecord) or found.record.refresh_interval == requested:
        return None
    return (
        f"otel_trace_summaries is refreshed every {found.record.refresh_interval}, not "
        f"{requested}: the refresh_interval option only applies to a new install; change this "
        f"one with `trace-summaries schedule --every {parse_interval(requested).text}`"
    )


def job_missing_warning(place: Place, cron_database: str) -> str | None:
    """pg_cron is reachable but this schema's job is not there (lost in an import)."""
    location = pgcron.locate(place, cron_database)
    if location.database is None:
        return None
    present = pgcron.job_present(place, location)
    if present is not False:
        return None
    return (
        f"otel_trace_summaries is installed but its pg_cron job "
        f'"{location.facts["job_name"]}" is missing in database {location.database}: '
        "run `trace-summaries repair` to schedule it again"
    )


def missing_role(conn: psycopg.Connection, role: str) -> str | None:
    """One line when the reader role a migration should grant to does not exist."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    conn.rollback()
    if exists:
        return None
    return f"-x reader_role: role {role!r} does not exist; create it first, or leave the option out"


READER_SQL = f"""
SELECT has_table_privilege(%(role)s, format('%%I.%%I', @schema_literal@, '{SUMMARIES}'), 'SELECT'),
       quote_ident(%(role)s), format('%%I.%%I', @schema_literal@, '{SUMMARIES}')
"""


def reader_role_warning(place: Place, role: str) -> str | None:
    """A warning when the summaries exist but ``role`` may not read them.

    The grant is part of installing the summaries: on a database already at
    head, the option alone changes nothing.
    """
    may_read, quoted_role, relation = place.execute(READER_SQL, {"role": role}).fetchone()
    if may_read:
        return None
    return (
        f"{role} may not read otel_trace_summaries: reader_role is granted when the summaries are "
        f"installed; on this database run GRANT SELECT ON {relation} TO {quoted_role}, or "
        "`trace-summaries repair`"
    )
