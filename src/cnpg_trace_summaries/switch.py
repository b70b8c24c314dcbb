"""``trace-summaries switch``: turn the installed mode into the other, on a live database.

It builds the new relation beside the old one (readers keep reading the old),
then swaps them in one short transaction under ``lock_timeout``, and moves
the pg_cron job to the new mode's command, at the recorded interval.
Switching to incremental creates the capture triggers before the new table is
filled, so no span written during the switch is missed, and fills it with
the incremental mode's own full rebuild: slice by slice of the window, range
by range of trace_id, each a transaction of its own. (A materialized view
can only be filled in one statement.) Every step commits on its own; one
interrupted is repaired by switching again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

from cnpg_trace_summaries import modes, pgcron
from cnpg_trace_summaries.contract import (
    REBUILD_PROCEDURE,
    REFRESH_LOCK_CLASS,
    STATE_TABLE,
    SUMMARIES,
    lock_key_sql,
)
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql import cron, lifecycle
from cnpg_trace_summaries.sql.common import NEXT, NEXT_SUFFIX, rename_indexes
from cnpg_trace_summaries.sql.render import SCHEMA, SCHEMA_LITERAL, set_values

log = logging.getLogger(__name__)

SWAP_LOCK_WAIT = "1s"

# Once the swap holds the refresh lock (waited for as long as lock_timeout
# allows: nobody waits behind an advisory lock), each table lock is waited for
# at most a second, so that readers queued behind the swap never wait longer;
# an attempt that times out is rolled back and tried again.
SWAP_LOCK_TIMEOUT = f"""
SELECT set_config('lock_timeout',
    CASE WHEN setting = interval '0' OR setting > interval '{SWAP_LOCK_WAIT}'
         THEN '{SWAP_LOCK_WAIT}' ELSE current_setting('lock_timeout') END, true)
FROM (SELECT CAST(current_setting('lock_timeout') AS interval) AS setting) AS current
"""
REFRESH_LOCK = f"SELECT pg_advisory_xact_lock({lock_key_sql(REFRESH_LOCK_CLASS, SCHEMA_LITERAL)})"
REBUILD_NEXT = (
    f"CALL {SCHEMA}.{REBUILD_PROCEDURE}("
    f"CAST(format('%%I.%%I', {SCHEMA_LITERAL}, '{NEXT}') AS regclass), %(reason)s, NULL)"
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
    build: dict | None = None  # the incremental build's outcome: its slices and ranges

    @property
    def switched(self) -> bool:
        return self.source != self.target


def _values(place: Place, **values: str) -> None:
    place.conn.execute(set_values(values, "%({})s"), values)


# The incremental mode's knobs for the size of a full rebuild's transactions.
SIZES_SQL = f"""
UPDATE {SCHEMA}.{STATE_TABLE}
SET rows_per_rebuild_range = coalesce(%(rows_per_range)s, rows_per_rebuild_range),
    spans_per_rebuild_slice = coalesce(%(spans_per_slice)s, spans_per_rebuild_slice)
"""


def switch(
    place: Place,
    target: str,
    *,
    cron_database: str = "",
    swap_attempts: int = 10,
    rows_per_range: int | None = None,
    spans_per_slice: int | None = None,
) -> SwitchReport:
    """Switch otel_trace_summaries in ``place``'s schema to ``target`` mode.

    ``place``'s connection is outside any transaction, with lock_timeout set
    and the migration lock held (see :mod:`.migrating`). To incremental:
    ``rows_per_range`` and ``spans_per_slice`` size the build's transactions
    (and every later full rebuild's).
    """
    connection = place.conn
    found = modes.require(place.conn, place.schema)
    connection.rollback()
    source, goal = found.mode, modes.MODES[target]
    if source is goal:
        return SwitchReport(source.name, goal.name, removed=_remove_leftovers(place, source))
    location = pgcron.locate(place, cron_database)
    connection.rollback()
    values = {
        "refresh_interval": found.record.refresh_interval,
        "require_refresh": "no",
        "cron_database": cron_database,
    }

    started = time.monotonic()
    with connection.transaction():
        place.execute(lifecycle.DROP_NEXT)
    build = None
    if goal.machinery:  # what an interrupted switch left, then the triggers, then the table
        with connection.transaction():
            _values(place, **values)
            place.execute(lifecycle.DROP_MACHINERY)
            for statement in goal.create_machinery():
                place.execute(statement)
            sizes = {"rows_per_range": rows_per_range, "spans_per_slice": spans_per_slice}
            place.execute(SIZES_SQL, sizes)
        log.info("capture triggers on otel_traces in place; building %s", NEXT)
        with connection.transaction():
            _values(place, **values)
            for statement in goal.create(NEXT, NEXT_SUFFIX):
                place.execute(statement)
        connection.autocommit = True  # the build commits slice by slice, range by range
        try:
            build = place.execute(
                REBUILD_NEXT, {"reason": f"switch from {source.name}"}
            ).fetchone()[0]
        finally:
            connection.autocommit = False
    else:
        with connection.transaction():
            _values(place, **values)
            for statement in goal.create(NEXT, NEXT_SUFFIX):
                place.execute(statement)
    build_seconds = time.monotonic() - started

    swap = [REFRESH_LOCK, SWAP_LOCK_TIMEOUT, lifecycle.COPY_GRANTS]
    if source.machinery:  # the readers' relation first, then otel_traces (dropping the
        # triggers): inserts never wait while the swap waits for a reader
        swap += [f"LOCK TABLE {SCHEMA}.{SUMMARIES} IN ACCESS EXCLUSIVE MODE",
                 lifecycle.DROP_MACHINERY]  # fmt: skip
    swap += [
        f"DROP {source.kind} {SCHEMA}.{SUMMARIES}",
        f"ALTER {goal.kind} {SCHEMA}.{NEXT} RENAME TO {SUMMARIES}",
        *rename_indexes(NEXT_SUFFIX),
    ]
    if not pgcron.elsewhere(location):
        swap.append(cron.SCHEDULE_HERE)
    swap_seconds = _swap(place, swap, values, swap_attempts)

    job, job_error = "", None
    if pgcron.elsewhere(location):
        try:
            job = pgcron.schedule_elsewhere(place, location, pgcron.job(place))
        except pgcron.CronError as error:
            job_error = error
        connection.rollback()
    connection.autocommit = True
    try:  # catch up with what came in meanwhile
        if goal.machinery:
            place.execute(goal.refresh, {"full": False})
        else:
            place.execute(goal.refresh)
    finally:
        connection.autocommit = False
    if job_error is not None:
        # The old job now runs a command for the other mode, and fails: say so, and fail.
        raise SwitchError(
            f"switched otel_trace_summaries to {goal.name} mode, but its pg_cron job still runs "
            f"the {source.name} mode's command: {job_error}"
        )
    return SwitchReport(source.name, goal.name, swap_seconds, build_seconds, job, build=build)


def _remove_leftovers(place: Place, mode: modes.Mode) -> str:
    """Remove what an interrupted switch left beside ``mode``; say what, or ''."""
    connection = place.conn
    next_left, machinery_left = place.execute(lifecycle.LEFTOVERS_SQL).fetchone()
    connection.rollback()
    statements, removed = [], []
    if next_left:
        statements.append(lifecycle.DROP_NEXT)
        removed.append(NEXT)
    if not mode.machinery and machinery_left:
        statements.append(lifecycle.DROP_MACHINERY)
        removed.append("the incremental mode's triggers on otel_traces, functions and tables")
    if statements:
        with connection.transaction():
            for statement in statements:
                place.execute(statement)
        log.info("removed what an interrupted switch left: %s", ", ".join(removed))
    return ", ".join(removed)


def _swap(place: Place, statements: list[str], values: dict, attempts: int) -> float:
    """Run the swap in one transaction; retry when it could not get its locks in time."""
    for attempt in range(1, attempts + 1):
        started = time.monotonic()
        try:
            with place.conn.transaction():
                _values(place, **values)
                for statement in statements:
                    place.execute(statement)
            return time.monotonic() - started
        except psycopg.errors.LockNotAvailable:
            if attempt == attempts:
                raise
            log.warning("the swap waited too long for a lock (attempt %s); trying again", attempt)
            time.sleep(1)
    raise AssertionError("unreachable")
