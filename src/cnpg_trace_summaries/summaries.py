"""Reading, refreshing and verifying otel_trace_summaries, in either mode.

Functions take an open psycopg connection whose search_path starts with the
summaries' schema, and return plain data; printing is the console command's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cnpg_trace_summaries import modes
from cnpg_trace_summaries.contract import (
    CAPTURE_TRIGGERS,
    DIRTY_TABLE,
    REFRESH_FUNCTION,
    REFRESH_LOCK_CLASS,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    lock_key_sql,
)
from cnpg_trace_summaries.summary_sql import COLUMN_LIST, window_query

NEWEST_SQL = f"""
SELECT {COLUMN_LIST}
FROM {SUMMARIES}
ORDER BY "timestamp" DESC
LIMIT %s
"""


class NotInstalledError(LookupError):
    """otel_trace_summaries is not in this database (or not in the schema first on the path)."""


def require_mode(conn: psycopg.Connection) -> str:
    mode = modes.installed(conn)
    if mode is None:
        raise NotInstalledError(modes.NOT_INSTALLED)
    return mode


def newest(conn: psycopg.Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` most recently active traces, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(NEWEST_SQL, (limit,)).fetchall()


# -- refreshing ----------------------------------------------------------------
@dataclass(frozen=True)
class RefreshOutcome:
    refreshed: bool
    seconds: float
    mode: str
    reason: str = ""
    detail: dict = field(default_factory=dict)


LOCK_SQL = f"SELECT pg_try_advisory_xact_lock({lock_key_sql(REFRESH_LOCK_CLASS)})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock({lock_key_sql(REFRESH_LOCK_CLASS)})"


def refresh(conn: psycopg.Connection, *, full: bool = False) -> RefreshOutcome:
    """One refresh now, unless another refresher holds the lock; ``conn`` is in autocommit.

    View mode: ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` under a transaction-
    scoped advisory lock. Incremental mode: the refresh procedure, which takes
    the same lock itself (session-scoped, as it commits in batches).
    """
    mode = require_mode(conn)
    started = time.monotonic()
    if mode == "view":
        with conn.transaction():
            if not conn.execute(LOCK_SQL).fetchone()[0]:
                return RefreshOutcome(False, 0.0, mode, "another refresher holds the lock")
            conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SUMMARIES}")
        return RefreshOutcome(True, time.monotonic() - started, mode, "", {"kind": "full"})
    try:
        call = f"CALL {REFRESH_FUNCTION}(full_rebuild => %s)"
        (outcome,) = conn.execute(call, (full,)).fetchone()
    except psycopg.Error:
        # The procedure's lock is session-scoped: do not keep it past a failure.
        conn.execute(UNLOCK_SQL)
        raise
    seconds = time.monotonic() - started
    return RefreshOutcome(
        bool(outcome.get("refreshed")), seconds, mode, outcome.get("reason", ""), outcome
    )


# -- verifying -------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    mode: str
    exact: bool
    rows: int
    boundary: Any = None
    pending_keys: int = 0
    missing: int = 0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)
    note: str = ""


# Rows of the table that the definition does not give, and the reverse, at one
# snapshot, leaving out traces with changes the refresh has not applied yet.
DIFFERENCES_SQL = f"""
WITH pending AS (
    SELECT DISTINCT trace_id FROM {DIRTY_TABLE}
), expected AS (
    SELECT * FROM ({window_query("%(boundary)s")}) AS d
    WHERE trace_id NOT IN (SELECT trace_id FROM pending)
), actual AS (
    SELECT {COLUMN_LIST} FROM {SUMMARIES}
    WHERE trace_id NOT IN (SELECT trace_id FROM pending)
), missing AS (
    SELECT * FROM expected EXCEPT ALL SELECT * FROM actual
), unexpected AS (
    SELECT * FROM actual EXCEPT ALL SELECT * FROM expected
)
SELECT (SELECT count(*) FROM pending),
       (SELECT count(*) FROM actual),
       (SELECT count(*) FROM missing),
       (SELECT count(*) FROM unexpected),
       ARRAY(SELECT 'missing ' || trace_id FROM missing ORDER BY trace_id LIMIT 5)
       || ARRAY(SELECT 'unexpected ' || trace_id FROM unexpected ORDER BY trace_id LIMIT 5)
"""


# Capture triggers that are missing, or would not fire for an ordinary write.
BROKEN_TRIGGERS_SQL = f"""
SELECT coalesce(string_agg(wanted.name, ', ' ORDER BY wanted.name), '')
FROM unnest(CAST(%s AS text[])) AS wanted(name)
WHERE NOT EXISTS (
    SELECT 1 FROM pg_trigger
    WHERE tgrelid = to_regclass(format('%%I.{TRACES_TABLE}', current_schema()))
      AND tgname = wanted.name AND tgenabled IN ('O', 'A'))
"""


def broken_triggers(conn: psycopg.Connection) -> str:
    """The capture triggers that are missing or disabled, comma-separated ('' when none)."""
    return conn.execute(BROKEN_TRIGGERS_SQL, (list(CAPTURE_TRIGGERS.values()),)).fetchone()[0]


def verify(conn: psycopg.Connection) -> Verification:
    """Compare the summaries with their definition, at one snapshot, on a live database.

    Incremental mode: every row must equal what the definition gives at the
    table's window boundary, except for traces whose changes are still
    queued for the next refresh (they are counted, not compared); and the
    capture triggers must be there and enabled. View mode:
    a materialized view is its definition at its last refresh by
    construction; ``status`` reports how fresh it is.
    """
    mode = require_mode(conn)
    if mode == "view":
        rows = conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone()[0]
        return Verification(
            mode, True, rows, note="a materialized view is its definition at its last refresh"
        )
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        boundary, rebuild = conn.execute(
            f"SELECT window_boundary, rebuild_requested FROM {STATE_TABLE}"
        ).fetchone()
        if rebuild is not None or boundary is None:
            rows = conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone()[0]
            return Verification(
                mode, False, rows, boundary, note=f"a full rebuild is pending ({rebuild})"
            )
        pending, rows, missing, unexpected, examples = conn.execute(
            DIFFERENCES_SQL, {"boundary": boundary}
        ).fetchone()
        broken = broken_triggers(conn)
    finally:
        conn.execute("ROLLBACK")
    note = (
        f"changes to otel_traces are not being captured: trigger(s) {broken} missing or "
        f"disabled ({missing:,} missing, {unexpected:,} unexpected rows so far). Enable them "
        "(ALTER TABLE otel_traces ENABLE TRIGGER ...) or install the mode again, then run "
        "`trace-summaries refresh --full`"
        if broken
        else ""
    )
    exact = missing == 0 and unexpected == 0 and not note
    return Verification(
        mode, exact, rows, boundary, pending, missing, unexpected, examples, note=note
    )
