"""Reading, refreshing and verifying otel_trace_summaries, in either mode.

Functions take a :class:`~.database.Place` (a connection, its path pinned, and
the schema of the summaries) and return plain data; printing is the console
command's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cnpg_trace_summaries import modes
from cnpg_trace_summaries.contract import (
    CHILDREN_FUNCTION,
    DIRTY_TABLE,
    REFRESH_LOCK_CLASS,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    lock_key_sql,
)
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql import incremental
from cnpg_trace_summaries.sql.render import SCHEMA, SCHEMA_LITERAL
from cnpg_trace_summaries.sql.summary import COLUMN_LIST, window_query

NEWEST_SQL = f"""
SELECT {COLUMN_LIST}
FROM {SCHEMA}.{SUMMARIES}
ORDER BY "timestamp" DESC
LIMIT %s
"""

# How many rows, estimated (reltuples): what status and list show, without a scan.
ESTIMATED_ROWS_SQL = f"""
SELECT CAST(greatest(c.reltuples, 0) AS bigint)
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = {SCHEMA_LITERAL} AND c.relname = '{SUMMARIES}'
"""


def newest(place: Place, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` most recently active traces, newest first (one index scan)."""
    with place.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(place.sql(NEWEST_SQL, parameters=True), (limit,)).fetchall()


def estimated_rows(place: Place) -> int:
    return place.one(ESTIMATED_ROWS_SQL) or 0


def count(place: Place) -> int:
    """How many summaries there are: a scan (``list`` shows it; ``status`` never counts)."""
    return place.one(f"SELECT count(*) FROM {SCHEMA}.{SUMMARIES}")


# -- refreshing ----------------------------------------------------------------
@dataclass(frozen=True)
class RefreshOutcome:
    refreshed: bool
    seconds: float
    mode: str
    reason: str = ""
    detail: dict = field(default_factory=dict)


LOCK_SQL = f"SELECT pg_try_advisory_xact_lock({lock_key_sql(REFRESH_LOCK_CLASS, SCHEMA_LITERAL)})"


def refresh(place: Place, *, full: bool = False) -> RefreshOutcome:
    """One refresh now, unless another refresher holds the lock; ``place`` is in autocommit.

    View mode: ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` under a transaction-
    scoped advisory lock. Incremental mode: the refresh procedure, which takes
    the same lock itself, and releases it on every error.
    """
    mode = modes.require(place.conn, place.schema).mode
    started = time.monotonic()
    if not mode.can_drift:
        with place.conn.transaction():
            if not place.one(LOCK_SQL):
                return RefreshOutcome(False, 0.0, mode.name, "another refresher holds the lock")
            place.execute(mode.refresh)
        return RefreshOutcome(True, time.monotonic() - started, mode.name, "", {"kind": "full"})
    (outcome,) = place.execute(mode.refresh, {"full": full}).fetchone()
    seconds = time.monotonic() - started
    return RefreshOutcome(
        bool(outcome.get("refreshed")), seconds, mode.name, outcome.get("reason", ""), outcome
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
# snapshot, leaving out traces with changes the refresh has not applied yet: queued
# keys, and the traces of leaf relations that joined or left otel_traces since.
DIFFERENCES_SQL = f"""
WITH pending AS (
    SELECT trace_id FROM {SCHEMA}.{DIRTY_TABLE}
    UNION
    SELECT trace_id FROM {SCHEMA}.{TRACES_TABLE}
    WHERE tableoid = ANY (%(joined)s) AND "timestamp" > %(boundary)s
    UNION
    SELECT unnest(CAST(%(left)s AS text[]))
), expected AS (
    SELECT * FROM ({window_query("%(boundary)s")}) AS d
    WHERE trace_id NOT IN (SELECT trace_id FROM pending)
), actual AS (
    SELECT {COLUMN_LIST} FROM {SCHEMA}.{SUMMARIES}
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

STATE_SQL = f"""
SELECT window_boundary, rebuild_requested, children FROM {SCHEMA}.{STATE_TABLE}
"""
CHILDREN_SQL = f"SELECT {SCHEMA}.{CHILDREN_FUNCTION}(%s, %s)"
REGCLASS_SQL = "SELECT CAST(CAST(CAST(%s AS bigint) AS oid) AS regclass)::text"
DETACHED_KEYS_SQL = (
    'SELECT DISTINCT trace_id FROM ONLY {} WHERE "timestamp" > %s AND trace_id <> %s'
)

# Capture triggers that are missing, or would not fire where they must.
BROKEN_TRIGGERS_SQL = f"""
SELECT coalesce(string_agg(wanted.name, ', ' ORDER BY wanted.name), '')
FROM unnest(CAST(%s AS text[]), CAST(%s AS text[])) AS wanted(name, states)
WHERE NOT EXISTS (
    SELECT 1 FROM pg_trigger
    WHERE tgrelid = CAST(format('%%I.%%I', {SCHEMA_LITERAL}, '{TRACES_TABLE}') AS regclass)
      AND tgname = wanted.name AND strpos(wanted.states, CAST(tgenabled AS text)) > 0)
"""


def broken_triggers(place: Place) -> str:
    """The capture triggers that are missing or would not fire, comma-separated ('' when none)."""
    store = place.one(CHILDREN_SQL, (None, None))["store"]
    wanted = incremental.triggers_for(store)
    names = [trigger.name for trigger in wanted]
    states = [trigger.accepted_states for trigger in wanted]
    return place.one(BROKEN_TRIGGERS_SQL, (names, states))


def verify(place: Place) -> Verification:
    """Compare the summaries with their definition, at one snapshot, on a live database.

    Incremental mode: every row must equal what the definition gives at the
    table's window boundary, except for traces whose changes are still
    queued for the next refresh (they are counted, not compared); and the
    capture triggers must be there and enabled. View mode: a materialized view
    is its definition at its last refresh by construction; ``status`` reports
    how fresh it is.
    """
    mode = modes.require(place.conn, place.schema).mode
    if not mode.can_drift:
        return Verification(
            mode.name,
            True,
            estimated_rows(place),
            note="a materialized view is its definition at its last refresh",
        )
    conn = place.conn
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        state = place.execute(STATE_SQL).fetchone()
        if state is None:
            return Verification(
                mode.name, False, estimated_rows(place), note="its state row is missing: run "
                "`trace-summaries repair`, or any refresh, which restores it and rebuilds"
            )  # fmt: skip
        boundary, rebuild, children = state
        changes = place.one(CHILDREN_SQL, (psycopg.types.json.Jsonb(children), boundary))
        if rebuild is not None or boundary is None or changes["dropped"]:
            why = rebuild or (
                f"leaf relations of otel_traces with spans inside the window were dropped: "
                f"{', '.join(changes['dropped'])}"
                if changes["dropped"]
                else "no window boundary yet"
            )
            return Verification(
                mode.name,
                False,
                estimated_rows(place),
                boundary,
                note=f"a full rebuild is pending ({why}): the next refresh does it",
            )
        joined = [int(oid) for oid in changes["added"]]
        left = [  # the traces of leaf relations detached since: their spans left otel_traces
            key
            for oid in changes["detached"]
            for (key,) in conn.execute(
                DETACHED_KEYS_SQL.format(conn.execute(REGCLASS_SQL, (oid,)).fetchone()[0]),
                (boundary, ""),
            )
        ]
        pending, rows, missing, unexpected, examples = place.execute(
            DIFFERENCES_SQL, {"boundary": boundary, "joined": joined, "left": left}
        ).fetchone()
        broken = broken_triggers(place)
    finally:
        conn.execute("ROLLBACK")
    note = (
        f"changes to otel_traces are not being captured: trigger(s) {broken} missing or "
        f"disabled ({missing:,} missing, {unexpected:,} unexpected rows so far). Run "
        "`trace-summaries repair`, then `trace-summaries refresh --full`"
        if broken
        else ""
    )
    exact = missing == 0 and unexpected == 0 and not note
    return Verification(
        mode.name, exact, rows, boundary, pending, missing, unexpected, examples, note=note
    )
