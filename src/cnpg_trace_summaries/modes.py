"""The two modes of otel_trace_summaries: which one is installed, removing it, switching.

* ``view`` (the default, the spec's): a materialized view, refreshed by
  ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` (:mod:`.view_mode`).
* ``incremental``: a table maintained from what changed (:mod:`.incremental_mode`).

:func:`switch` turns one into the other on a live database: it builds the new
relation beside the old one (readers keep reading the old), then swaps them in
one short transaction under ``lock_timeout``, and moves the pg_cron job to
the new command. Switching to incremental creates the capture triggers before
the new table is filled, so no span written during the switch is missed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from sqlalchemy import Connection, text

from cnpg_trace_summaries import incremental_mode, pgcron, view_mode
from cnpg_trace_summaries.contract import (
    CAPTURE_TRIGGERS,
    CREATED_MARKER,
    DIRTY_TABLE,
    REFRESH_FUNCTION,
    REFRESH_LOCK_CLASS,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    lock_key_sql,
)
from cnpg_trace_summaries.summary_sql import VIEW_BOUNDARY, window_query

log = logging.getLogger(__name__)

NEXT_SUFFIX = view_mode.NEXT_SUFFIX
NEXT = f"{SUMMARIES}{NEXT_SUFFIX}"
SWAP_LOCK_WAIT = "1s"

INSTALLED_SQL = f"""
SELECT CASE c.relkind WHEN 'm' THEN 'view' WHEN 'r' THEN 'incremental' END
FROM pg_class AS c
WHERE c.oid = to_regclass(format('%I.{SUMMARIES}', current_schema()))
"""


def installed(conn: psycopg.Connection) -> str | None:
    """``view``, ``incremental``, or None when otel_trace_summaries is not here."""
    row = conn.execute(INSTALLED_SQL).fetchone()
    return row[0] if row else None


def _drop_machinery_statements() -> str:
    """PL/pgSQL that drops whatever exists of the incremental machinery, the triggers first.

    The triggers go first, taking otel_traces' lock before anything else: an
    insert that holds otel_traces and waits for the dirty table would
    otherwise deadlock with this transaction. Nothing touches otel_traces
    where the triggers do not exist.
    """
    lines = []
    for kind, name, finder in incremental_mode.MACHINERY:
        if kind == "TRIGGER":
            trigger, _, table = name.partition(" ON ")
            exists = (
                f"EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{trigger}' AND tgrelid = "
                f"to_regclass(format('%I.{table}', current_schema())))"
            )
        else:
            exists = f"{finder}(format('%I.{name}', current_schema())) IS NOT NULL"
        lines.append(f"    IF {exists} THEN\n        DROP {kind} {name};\n    END IF;")
    return "\n".join(lines)


def _kind(relation: str) -> str:
    """SQL: the relkind of ``relation`` in the current schema ('m', 'r'), or NULL."""
    return (
        "(SELECT relkind FROM pg_class "
        f"WHERE oid = to_regclass(format('%I.{relation}', current_schema())))"
    )


def _drop_relation(relation: str) -> str:
    """PL/pgSQL that drops ``relation`` in the current schema, a view or a table, if it is there."""
    return (
        f"    IF {_kind(relation)} = 'm' THEN\n        DROP MATERIALIZED VIEW {relation};\n"
        f"    ELSIF {_kind(relation)} = 'r' THEN\n        DROP TABLE {relation};\n    END IF;"
    )


def _remove_statements() -> str:
    """PL/pgSQL that removes whichever mode is installed, and what a switch built beside it.

    In the order that never holds otel_traces while it waits (as the switch's
    swap does), each wait bounded by lock_timeout:

    1. the refresh lock: a running refresh is waited for, nothing else held;
    2. the readers' relations: a table is locked, a materialized view (which
       cannot be LOCKed, and whose drop does not touch otel_traces) dropped,
       so that a dashboard's long query is waited for before otel_traces is;
    3. the capture triggers, which lock otel_traces: from here on inserts
       wait, and this transaction waits for nothing but them;
    4. the rest; the dirty table after the triggers (see
       :func:`_drop_machinery_statements`).
    """
    lines = [f"    PERFORM pg_advisory_xact_lock({lock_key_sql(REFRESH_LOCK_CLASS)});"]
    for relation in (SUMMARIES, NEXT):
        lines.append(
            f"    IF {_kind(relation)} = 'r' THEN\n"
            f"        LOCK TABLE {relation} IN ACCESS EXCLUSIVE MODE;\n"
            f"    ELSIF {_kind(relation)} = 'm' THEN\n"
            f"        DROP MATERIALIZED VIEW {relation};\n    END IF;"
        )
    lines += [_drop_machinery_statements(), _drop_relation(SUMMARIES), _drop_relation(NEXT)]
    return "\n".join(lines)


# Drops whatever exists of the incremental machinery, the triggers first.
DROP_MACHINERY = f"DO $machinery$\nBEGIN\n{_drop_machinery_statements()}\nEND\n$machinery$"

# Drops what a switch built beside the old relation, a table or a view.
DROP_NEXT = f"DO $next$\nBEGIN\n{_drop_relation(NEXT)}\nEND\n$next$"

# Removes whichever mode is installed, completely; the downgrade runs it.
UNINSTALL = f"""
DO $uninstall$
BEGIN
{_remove_statements()}
END
$uninstall$
"""

# Before installing: refuse an otel_trace_summaries that is not ours; remove
# what an interrupted run of this revision (or a switch) left. The revision
# runs it in a transaction of its own, so that otel_traces is locked only for
# as long as the triggers take to drop, not for the build that follows.
PREPARE = f"""
DO $prepare$
DECLARE
    existing constant regclass := to_regclass(format('%I.{SUMMARIES}', current_schema()));
BEGIN
    IF existing IS NOT NULL
       AND coalesce(obj_description(existing, 'pg_class'), '') NOT LIKE '%{CREATED_MARKER}%' THEN
        RAISE EXCEPTION 'otel_trace_summaries already exists in schema % and was not created by this revision',
            current_schema()
            USING HINT = 'It is probably left from an older hand-written migration. Check nothing else '
                         'depends on it, then DROP MATERIALIZED VIEW otel_trace_summaries and upgrade again.',
                  DETAIL = coalesce(obj_description(existing, 'pg_class'), 'no comment; not {CREATED_MARKER}');
    END IF;
    IF existing IS NOT NULL
       OR to_regclass(format('%I.{STATE_TABLE}', current_schema())) IS NOT NULL
       OR to_regclass(format('%I.{NEXT}', current_schema())) IS NOT NULL THEN
        RAISE NOTICE 'otel_trace_summaries in schema % was left by an interrupted run: removing it to build it again',
            current_schema();
{_remove_statements()}
    END IF;
END
$prepare$
"""

# Readers' grants on the old relation, given again on the new one.
COPY_GRANTS = f"""
DO $grants$
DECLARE
    grant_to record;
BEGIN
    FOR grant_to IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS role
        FROM pg_class AS c, aclexplode(c.relacl) AS a
        WHERE c.oid = to_regclass(format('%I.{SUMMARIES}', current_schema()))
          AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON %I.{NEXT} TO %s', current_schema(), grant_to.role);
    END LOOP;
END
$grants$
"""

SWAP_IN_NEXT = [f"ALTER TABLE {NEXT} RENAME TO {SUMMARIES}", *view_mode.rename_indexes(NEXT_SUFFIX)]

# Once the swap holds the refresh lock (waited for as long as lock_timeout
# allows: nobody waits behind an advisory lock), each table lock is waited for
# at most a second, so that readers queued behind the swap never wait longer;
# an attempt that times out is rolled back and tried again.
SWAP_LOCK_TIMEOUT = f"""
SELECT set_config('lock_timeout',
    CASE WHEN setting = interval '0' OR setting > interval '{SWAP_LOCK_WAIT}' THEN '{SWAP_LOCK_WAIT}'
         ELSE current_setting('lock_timeout') END, true)
FROM (SELECT CAST(current_setting('lock_timeout') AS interval) AS setting) AS current
"""

# Leftovers of an interrupted switch: what it built beside the relation, and,
# in view mode, the incremental mode's machinery (its triggers would keep
# filling a dirty table that nobody reads).
LEFTOVERS_SQL = f"""
SELECT to_regclass(format('%I.{NEXT}', current_schema())) IS NOT NULL,
       to_regclass(format('%I.{STATE_TABLE}', current_schema())) IS NOT NULL
       OR to_regclass(format('%I.{DIRTY_TABLE}', current_schema())) IS NOT NULL
       OR EXISTS (SELECT 1 FROM pg_trigger
                  WHERE tgrelid = to_regclass(format('%I.{TRACES_TABLE}', current_schema()))
                    AND tgname IN ({", ".join(f"'{name}'" for name in CAPTURE_TRIGGERS.values())}))
"""


NOT_INSTALLED = (
    "otel_trace_summaries does not exist in this database; run `alembic upgrade head` first"
)


class SwitchError(Exception):
    """The switch cannot go on; the message says why, and what is left as it was."""


@dataclass(frozen=True)
class SwitchReport:
    source: str
    target: str
    swap_seconds: float = 0.0
    build_seconds: float = 0.0
    job: str = ""
    removed: str = ""  # what an interrupted switch had left, when nothing else was to do

    @property
    def switched(self) -> bool:
        return self.source != self.target


def _run(connection: Connection, statements: list[str]) -> None:
    """Run SQL as written: no bind parameters, so '%' and ':' mean what PostgreSQL says."""
    for statement in statements:
        connection.exec_driver_sql(statement, execution_options={"no_parameters": True})


def switch(
    connection: Connection,
    target: str,
    *,
    cron_database: str = "",
    swap_attempts: int = 10,
) -> SwitchReport:
    """Switch otel_trace_summaries in ``connection``'s schema to ``target`` mode.

    ``connection`` is outside any transaction, with lock_timeout set and the
    migration lock held (see :mod:`.migrating`). Every step commits on its
    own; one interrupted is repaired by switching again.
    """
    raw = connection.connection.driver_connection
    source = installed(raw)
    connection.rollback()
    if source is None:
        raise SwitchError(NOT_INSTALLED)
    if source == target:
        return SwitchReport(source, target, removed=_remove_leftovers(connection, source))
    location = pgcron.locate(raw, cron_database)
    connection.rollback()

    started = time.monotonic()
    with connection.begin():
        _run(connection, [DROP_NEXT])
    if target == "incremental":
        with connection.begin():  # what an interrupted switch left, then the triggers
            _run(connection, [DROP_MACHINERY])
            _run(connection, incremental_mode.create_machinery())
        log.info("capture triggers on otel_traces in place; building %s", NEXT)
        with connection.begin():
            _run(connection, incremental_mode.create_summaries(NEXT, NEXT_SUFFIX))
            boundary = connection.execute(text(f"SELECT {VIEW_BOUNDARY}")).scalar_one()
            # Claim first, then read: every claimed change is in the build's snapshot.
            _run(connection, [f"DELETE FROM {incremental_mode.DIRTY_TABLE}"])
            connection.execute(
                text(f"INSERT INTO {NEXT} {window_query(':boundary')}"), {"boundary": boundary}
            )
            connection.execute(
                text(
                    f"UPDATE {incremental_mode.STATE_TABLE} SET window_boundary = :boundary, "
                    "rebuild_requested = NULL, rebuild_requested_at = NULL"
                ),
                {"boundary": boundary},
            )
            _run(connection, [f"ANALYZE {NEXT}"])
    else:
        with connection.begin():
            _run(connection, view_mode.install(NEXT, NEXT_SUFFIX))
    build_seconds = time.monotonic() - started

    swap = [
        f"SELECT pg_advisory_xact_lock({lock_key_sql(REFRESH_LOCK_CLASS)})",
        SWAP_LOCK_TIMEOUT,
        COPY_GRANTS,
    ]
    if target == "incremental":
        swap += [f"DROP MATERIALIZED VIEW {SUMMARIES}", *SWAP_IN_NEXT,
                 view_mode.comment("TABLE", "incremental")]  # fmt: skip
    else:
        swap += [
            # The readers' relation first, then otel_traces (dropping the triggers):
            # inserts never wait while the swap waits for a reader.
            f"LOCK TABLE {SUMMARIES} IN ACCESS EXCLUSIVE MODE",
            DROP_MACHINERY,
            f"DROP TABLE {SUMMARIES}",
            f"ALTER MATERIALIZED VIEW {NEXT} RENAME TO {SUMMARIES}",
            *view_mode.rename_indexes(NEXT_SUFFIX),
            view_mode.comment("MATERIALIZED VIEW", "view"),
        ]
    if not pgcron.elsewhere(location):
        swap.append(pgcron.schedule_here_sql(target, require_refresh=False,
                                             cron_database=cron_database or None))  # fmt: skip
    swap_seconds = _swap(connection, swap, swap_attempts)

    job, job_error = "", None
    if pgcron.elsewhere(location):
        try:
            job = pgcron.schedule_elsewhere(raw, location, target)
        except pgcron.CronError as error:
            job_error = error
    catch_up = (
        f"CALL {REFRESH_FUNCTION}()"
        if target == "incremental"
        else f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SUMMARIES}"
    )
    autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
    autocommit.execute(text(catch_up))
    if job_error is not None:
        # The old job now runs a command for the other mode, and fails: say so, and fail.
        raise SwitchError(
            f"switched otel_trace_summaries to {target} mode, but its pg_cron job still runs the "
            f"{source} mode's command: {job_error}"
        )
    return SwitchReport(source, target, swap_seconds, build_seconds, job)


def _remove_leftovers(connection: Connection, mode: str) -> str:
    """Remove what an interrupted switch left beside ``mode``; say what, or ''."""
    raw = connection.connection.driver_connection
    next_left, machinery_left = raw.execute(LEFTOVERS_SQL).fetchone()
    connection.rollback()
    statements, removed = [], []
    if next_left:
        statements.append(DROP_NEXT)
        removed.append(NEXT)
    if mode == "view" and machinery_left:
        statements.append(DROP_MACHINERY)
        removed.append("the incremental mode's triggers on otel_traces, functions and tables")
    if statements:
        with connection.begin():
            _run(connection, statements)
        log.info("removed what an interrupted switch left: %s", ", ".join(removed))
    return ", ".join(removed)


def _swap(connection: Connection, statements: list[str], attempts: int) -> float:
    """Run the swap in one transaction; retry when it could not get its locks in time."""
    for attempt in range(1, attempts + 1):
        started = time.monotonic()
        try:
            with connection.begin():
                _run(connection, statements)
            return time.monotonic() - started
        except Exception as error:
            sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
            if sqlstate != "55P03" or attempt == attempts:
                raise
            log.warning("the swap waited too long for a lock (attempt %s); trying again", attempt)
            time.sleep(1)
    raise AssertionError("unreachable")
