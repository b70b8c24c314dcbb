"""What alembic/env.py does around the revisions: session settings and the migration lock.

Migrations run while collectors write spans, often from two pods at once.
So every migration session

* waits at most ``lock_timeout`` for any lock on a live table,
* stops its server-side work when the ``alembic`` process dies
  (``client_connection_check_interval``, PostgreSQL 14 and later),
* shows up as ``cnpg-trace-summaries migration`` in ``pg_stat_activity``,
* and holds a session-level advisory lock, taken before the version table
  is read: a second migrator waits for the first (at most
  ``migration_lock_wait``), then finds nothing left to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection, exc, text

from cnpg_trace_summaries import modes
from cnpg_trace_summaries.contract import MIGRATION_LOCK_CLASS, PROJECT, lock_key_sql

APPLICATION_NAME = f"{PROJECT} migration"
# A dead alembic process is noticed within this, and its statement cancelled.
CLIENT_CHECK_INTERVAL = "1s"

LOCK_SQL = f"SELECT pg_advisory_lock({lock_key_sql(MIGRATION_LOCK_CLASS)})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock({lock_key_sql(MIGRATION_LOCK_CLASS)})"

# Who holds the lock: advisory locks show their two int4 keys as oids.
HOLDER_SQL = f"""
SELECT a.pid, a.application_name, a.usename, a.client_addr,
       to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') AS since
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = {MIGRATION_LOCK_CLASS}
  AND l.objid = (CAST(hashtext(current_schema()) AS bigint) + 4294967296) % 4294967296
"""


class MigrationLockBusyError(Exception):
    """Another migrator kept the lock for longer than we were willing to wait."""


def offline_preamble(lock_timeout: str) -> list[str]:
    """The first statements of a ``--sql`` script: the same lock and lock_timeout."""
    return [f"SET lock_timeout = '{lock_timeout}'", LOCK_SQL]


def configure_session(connection: Connection, lock_timeout: str) -> None:
    """lock_timeout, and a client check where the server has it (PostgreSQL 14+)."""
    connection.execute(text(f"SET lock_timeout = '{lock_timeout}'"))
    version = connection.execute(text("SHOW server_version_num")).scalar_one()
    if int(version) >= 140000:
        connection.execute(
            text(f"SET client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'")
        )


@contextlib.contextmanager
def migration_lock(connection: Connection, *, wait: str, lock_timeout: str) -> Iterator[None]:
    """Hold this schema's migration lock for the block; wait at most ``wait`` for it.

    The lock is session-level, so it outlives the per-revision transactions;
    ``connection`` is left outside any transaction when the block starts.
    """
    connection.execute(text(f"SET lock_timeout = '{wait}'"))
    try:
        connection.execute(text(LOCK_SQL))
    except exc.OperationalError as error:
        if getattr(error.orig, "sqlstate", None) != "55P03":
            raise
        connection.rollback()
        holder = connection.execute(text(HOLDER_SQL)).mappings().first()
        connection.rollback()
        who = (
            f"pid {holder['pid']}, {holder['application_name'] or 'no application_name'}, "
            f"user {holder['usename']}, connected since {holder['since']}"
            if holder
            else "it has just been released"
        )
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        connection.rollback()
        raise MigrationLockBusyError(
            f"another migration of schema {schema} held the migration lock for longer than "
            f"{wait} ({who}); let it finish, or wait longer with -x migration_lock_wait=..."
        ) from None
    connection.execute(text(f"SET lock_timeout = '{lock_timeout}'"))
    connection.commit()
    try:
        yield
    finally:
        if not connection.closed and not connection.invalidated:
            with contextlib.suppress(exc.DBAPIError):
                if connection.in_transaction():
                    connection.rollback()
                connection.execute(text(UNLOCK_SQL))
                connection.commit()


def mode_mismatch(connection: Connection, requested: str, explicit: bool) -> str | None:
    """A warning when an explicitly requested mode is not the one installed.

    ``-x summaries`` (or TRACE_SUMMARIES_MODE) chooses the mode of a new
    install; it never converts one: that is ``trace-summaries switch``.
    """
    if not explicit:
        return None
    installed = modes.installed(connection.connection.driver_connection)
    connection.rollback()
    if installed is None or installed == requested:
        return None
    return (
        f"otel_trace_summaries is installed in {installed} mode, not {requested}: the summaries "
        f"option only chooses the mode of a new install; switch this one with "
        f"`trace-summaries switch {requested}`"
    )


def missing_role(connection: Connection, role: str) -> str | None:
    """One line when the reader role a migration should grant to does not exist."""
    found = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role})
    exists = found.first() is not None
    connection.rollback()
    if exists:
        return None
    return f"-x reader_role: role {role!r} does not exist; create it first, or leave the option out"


def reader_role_warning(connection: Connection, role: str) -> str | None:
    """A warning when the summaries exist but ``role`` may not read them.

    The grant is part of installing the summaries: on a database already at
    head, the option alone changes nothing.
    """
    if modes.installed(connection.connection.driver_connection) is None:
        connection.rollback()
        return None
    may_read = connection.execute(
        text("SELECT has_table_privilege(:role, :relation, 'SELECT')"),
        {"role": role, "relation": modes.SUMMARIES},
    ).scalar_one()
    connection.rollback()
    if may_read:
        return None
    return (
        f"{role} may not read otel_trace_summaries: reader_role is granted when the summaries are "
        f"installed; on this database run GRANT SELECT ON otel_trace_summaries TO {role}"
    )
