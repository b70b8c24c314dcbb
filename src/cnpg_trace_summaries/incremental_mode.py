"""The incremental mode: a table kept exact by recomputing only the traces that changed.

The same relation name, the same 14 columns with the same semantics
(:mod:`.summary_sql`), the same three index names. What keeps it exact:

* statement-level ``AFTER INSERT/UPDATE/DELETE`` triggers on otel_traces, with
  transition tables, append the trace_ids a statement touched to
  ``otel_trace_summaries_dirty``: logged, append-only, no unique constraint
  (a deduplicating table loses updates: a key that a running ingest
  transaction writes could be consumed before that transaction commits).
  Spans at or before the stored window boundary are in no summary and will
  never be again, so they are skipped: retention deletes stay cheap.
* ``AFTER TRUNCATE`` asks for a full rebuild.
* ``CALL otel_trace_summaries_refresh()`` (pg_cron, or ``trace-summaries
  refresh``), one refresher at a time (an advisory lock):

  - claims the dirty keys with ``DELETE ... RETURNING``, adds the traces of
    spans between the previous window boundary and the new one, recomputes
    just those with one index lookup per trace, deletes the summaries of
    traces with no span left in the window, and upserts the others only
    where a column changed; all in one transaction, with one snapshot;
  - above a backlog (after an outage, on the first run, after a TRUNCATE)
    rebuilds everything instead: one pass over the window (the view's
    aggregate) into an unlogged staging table, then written into the table
    in ranges of trace_id, each committed on its own, so that readers never
    wait and no write transaction runs long.

Why it is exact: a change to a span and its dirty key commit together, so a
claimed key's change is visible to the recomputation in the same snapshot,
and an unclaimed key stays for the next refresh. A summary depends only on
its trace's spans inside the window, so a row can change only through a
dirty key or a span crossing the boundary, and both are recomputed.

A full rebuild claims every key and commits, then reads the window in a
later snapshot: every claimed change is in it, and every later change has a
key of its own for the next refresh. It marks the state row as asking for a
full rebuild until its last range is committed, so that a rebuild interrupted halfway (killed, cancelled,
failed) is done again by the next refresh rather than left half done. The
state row's ``rows_per_rebuild_range`` sets the size of its ranges (NULL:
:data:`ROWS_PER_REBUILD_RANGE`), and ``full_refresh_above`` the backlog
above which a refresh rebuilds everything.

Writes that bypass the triggers, and what to do about each
(``trace-summaries verify`` finds any difference they make, and
``trace-summaries refresh --full`` repairs it; tests/test_incremental.py
proves both):

* a partitioned otel_traces: writes through the parent are captured (the
  triggers are on the parent); INSERT, UPDATE, DELETE or TRUNCATE on a
  partition directly are not: write through the parent, or refresh --full
  after such writes;
* DETACH or DROP of a partition: nothing to do when all its spans are older
  than the window (the usual retention); refresh --full otherwise;
* retention DELETEs of spans older than the window: captured, and cheap, as
  they add no key;
* sessions with ``session_replication_role = replica`` (a logical
  replication subscriber's apply worker, or any session that sets it) fire
  no ordinary trigger: on a subscriber, ``ALTER TABLE otel_traces ENABLE
  ALWAYS TRIGGER`` each capture trigger; elsewhere, refresh --full after;
* ``ALTER TABLE otel_traces DISABLE TRIGGER``: verify reports the disabled
  triggers; enable them again, then refresh --full.

The columns of the table are those of the view's definition, down to their
collations (several are "C"): created from the definition itself, so that
readers' queries, and statements they have prepared, behave alike in both
modes and survive a switch.

The functions pin their search_path (pg_catalog first for the trigger, which
runs as its owner so that ingest roles need no grant on the helper tables).
The procedure cannot pin one (a procedure with SET cannot COMMIT), so it is
created with its schema written into its body.
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import (
    CAPTURE_FUNCTION,
    CAPTURE_TRIGGERS,
    CREATED_MARKER,
    DIRTY_TABLE,
    REFRESH_FUNCTION,
    REFRESH_LOCK_CLASS,
    STATE_TABLE,
    SUMMARIES,
    SUMMARY_COLUMNS,
    TRACES_TABLE,
    TRUNCATE_FUNCTION,
    WINDOW,
    lock_key_sql,
)
from cnpg_trace_summaries.summary_sql import COLUMN_LIST, keyed_query, window_query
from cnpg_trace_summaries.view_mode import SUMMARIES_STORAGE, comment, create_indexes

# Functions that do one unit of work each, in one transaction.
APPLY_FUNCTION = "otel_trace_summaries_apply_changes"
REBUILD_STAGE_FUNCTION = "otel_trace_summaries_rebuild_stage"
REBUILD_BATCH_FUNCTION = "otel_trace_summaries_rebuild_range"
# A full rebuild's one pass over the window, read back range by range.
STAGING_TABLE = "otel_trace_summaries_rebuild"
STAGING_INDEX = f"{STAGING_TABLE}_trace_id"
# A full rebuild writes this many summary rows per transaction, unless the
# state row's rows_per_rebuild_range says otherwise.
ROWS_PER_REBUILD_RANGE = 100_000

REFUSE_HYPERTABLE = f"""
DO $guard$
DECLARE
    hypertable boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE 'SELECT count(*) > 0 FROM timescaledb_information.hypertables '
                'WHERE hypertable_schema = current_schema() AND hypertable_name = ''{TRACES_TABLE}'''
            INTO hypertable;
    END IF;
    IF hypertable THEN
        RAISE EXCEPTION 'otel_traces in schema % is a TimescaleDB hypertable: the incremental mode refuses it',
                current_schema()
            USING HINT = 'Older TimescaleDB releases reject transition-table triggers on hypertables '
                         'when a row is inserted, which would stop ingest. Use the view mode (the default).';
    END IF;
END
$guard$
"""


def create_table(relation: str = SUMMARIES) -> list[str]:
    """The table, with the columns the view's definition gives, down to their collations.

    Several columns of the definition are in the "C" collation (summary_sql's
    byte order). A column with another collation would sort and compare
    differently in the two modes, and every statement a reader has prepared
    would fail after a switch ("cached plan must not change result type").
    """
    return [
        f"CREATE TABLE {relation} WITH {SUMMARIES_STORAGE} AS\n{window_query()}\nWITH NO DATA",
        f"ALTER TABLE {relation} ALTER COLUMN trace_id SET NOT NULL",
    ]


CREATE_DIRTY = f"""
CREATE TABLE {DIRTY_TABLE} (trace_id text NOT NULL)
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000)
"""

CREATE_STATE = f"""
CREATE TABLE {STATE_TABLE} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    window_boundary timestamptz,
    rebuild_requested text,
    rebuild_requested_at timestamptz,
    full_refresh_above bigint,
    installed_at timestamptz NOT NULL DEFAULT now(),
    last_refresh_at timestamptz,
    last_refresh_kind text,
    last_refresh_seconds double precision,
    last_refresh_keys bigint,
    last_refresh_upserted bigint,
    last_refresh_deleted bigint,
    last_full_refresh_at timestamptz,
    rows_per_rebuild_range bigint CHECK (rows_per_rebuild_range > 0)
)
"""

# Unlogged: scratch that a crash may empty (the rebuild flag then asks again).
CREATE_STAGING = [
    f"CREATE UNLOGGED TABLE {STAGING_TABLE} AS\n{window_query()}\nWITH NO DATA",
    f"CREATE UNIQUE INDEX {STAGING_INDEX} ON {STAGING_TABLE} (trace_id)",
]

INIT_STATE = f"""
INSERT INTO {STATE_TABLE} (rebuild_requested, rebuild_requested_at) VALUES ('installed', now())
"""

HELPER_COMMENTS = [
    f"COMMENT ON TABLE {DIRTY_TABLE} IS 'trace_ids whose summaries must be recomputed, appended by "
    f"triggers on otel_traces and claimed by {REFRESH_FUNCTION}() ({CREATED_MARKER})'",
    f"COMMENT ON TABLE {STATE_TABLE} IS 'the incremental refresh''s window boundary, pending "
    f"rebuild and last run ({CREATED_MARKER}); full_refresh_above: dirty keys above which a "
    f"refresh rebuilds everything (NULL: a third of the summaries, at least 100000); "
    f"rows_per_rebuild_range: how many summary rows a full rebuild writes per transaction "
    f"(NULL: {ROWS_PER_REBUILD_RANGE})'",
    f"COMMENT ON TABLE {STAGING_TABLE} IS 'a full rebuild''s pass over the window, written "
    f"to {SUMMARIES} range by range; empty between rebuilds ({CREATED_MARKER})'",
]

_SET_COLUMNS = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in SUMMARY_COLUMNS[1:])
_OLD_ROW = ", ".join(f's."{c}"' for c in SUMMARY_COLUMNS[1:])
_NEW_ROW = ", ".join(f'EXCLUDED."{c}"' for c in SUMMARY_COLUMNS[1:])

# Upsert the rows of a CTE named "computed", rewriting only rows that changed.
UPSERT_COMPUTED = f"""INSERT INTO {SUMMARIES} AS s ({COLUMN_LIST})
        SELECT {COLUMN_LIST} FROM computed
        ON CONFLICT (trace_id) DO UPDATE SET {_SET_COLUMNS}
        WHERE ({_OLD_ROW}) IS DISTINCT FROM ({_NEW_ROW})
        RETURNING 1"""

CAPTURE = f"""
CREATE FUNCTION {CAPTURE_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $capture$
#variable_conflict use_variable
DECLARE
    boundary constant timestamptz :=
        coalesce((SELECT window_boundary FROM {STATE_TABLE}), '-infinity');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {DIRTY_TABLE} (trace_id)
        SELECT DISTINCT trace_id FROM captured_new WHERE "timestamp" > boundary AND trace_id <> '';
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {DIRTY_TABLE} (trace_id)
        SELECT DISTINCT trace_id FROM captured_old WHERE "timestamp" > boundary AND trace_id <> '';
    ELSE
        INSERT INTO {DIRTY_TABLE} (trace_id)
        SELECT trace_id FROM captured_new WHERE "timestamp" > boundary AND trace_id <> ''
        UNION
        SELECT trace_id FROM captured_old WHERE "timestamp" > boundary AND trace_id <> '';
    END IF;
    RETURN NULL;
END
$capture$
"""

# A TRUNCATE holds ACCESS EXCLUSIVE on otel_traces when this trigger updates
# the state row. So every transaction that locks the state row and reads
# otel_traces (the refresh) locks otel_traces first: in the other order, a
# refresh holding the row and a TRUNCATE holding otel_traces would deadlock.
# (The parent alone is enough: a TRUNCATE of the parent locks it first.)
TRUNCATED = f"""
CREATE FUNCTION {TRUNCATE_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $truncated$
BEGIN
    UPDATE {STATE_TABLE}
    SET rebuild_requested = 'otel_traces was truncated', rebuild_requested_at = clock_timestamp();
    RETURN NULL;
END
$truncated$
"""

# One incremental refresh: claim, add boundary crossers, recompute, apply.
APPLY = f"""
CREATE FUNCTION {APPLY_FUNCTION}(new_boundary timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $apply$
#variable_conflict use_variable
DECLARE
    previous timestamptz;
    n_claimed bigint;
    n_keys bigint;
    n_upserted bigint;
    n_deleted bigint;
BEGIN
    -- otel_traces before the state row, as a TRUNCATE takes them (see TRUNCATED).
    LOCK TABLE ONLY {TRACES_TABLE} IN ACCESS SHARE MODE;
    SELECT window_boundary INTO previous FROM {STATE_TABLE} FOR UPDATE;
    new_boundary := greatest(new_boundary, previous);
    WITH claimed AS (
        DELETE FROM {DIRTY_TABLE} RETURNING trace_id
    ), crossing AS (
        SELECT trace_id FROM {TRACES_TABLE}
        WHERE "timestamp" > previous AND "timestamp" <= new_boundary AND trace_id <> ''
    ), keys AS (
        SELECT trace_id FROM claimed UNION SELECT trace_id FROM crossing
    ), computed AS MATERIALIZED (
        {keyed_query("keys", "new_boundary")}
    ), removed AS (
        DELETE FROM {SUMMARIES} AS s USING keys AS k
        WHERE s.trace_id = k.trace_id
          AND NOT EXISTS (SELECT 1 FROM computed AS c WHERE c.trace_id = k.trace_id)
        RETURNING 1
    ), upserted AS (
        {UPSERT_COMPUTED}
    )
    SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM keys),
           (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed)
    INTO n_claimed, n_keys, n_upserted, n_deleted;
    UPDATE {STATE_TABLE} SET window_boundary = new_boundary;
    RETURN jsonb_build_object('kind', 'incremental', 'claimed', n_claimed, 'keys', n_keys,
                              'upserted', n_upserted, 'deleted', n_deleted);
END
$apply$
"""

# A full rebuild reads the window once, into the staging table (one
# aggregate, as the view's refresh), and returns the trace_ids that cut it
# into ranges of rows_per_range rows, in the column's order; then each range
# is written in a transaction of its own. Ranges read from otel_traces
# itself would each scan it again: the spans of a range of trace_ids are
# spread over the whole table.
REBUILD_STAGE = f"""
CREATE FUNCTION {REBUILD_STAGE_FUNCTION}(boundary timestamptz, rows_per_range bigint) RETURNS text[]
LANGUAGE plpgsql AS $stage$
#variable_conflict use_variable
BEGIN
    TRUNCATE {STAGING_TABLE};
    DROP INDEX IF EXISTS {STAGING_INDEX};  -- built after the rows are in: faster
    INSERT INTO {STAGING_TABLE}
    {window_query("boundary")};
    CREATE UNIQUE INDEX {STAGING_INDEX} ON {STAGING_TABLE} (trace_id);
    ANALYZE {STAGING_TABLE};
    RETURN ARRAY(
        SELECT trace_id
        FROM (SELECT trace_id, row_number() OVER (ORDER BY trace_id) AS n FROM {STAGING_TABLE}) AS numbered
        WHERE n > 1 AND (n - 1) % rows_per_range = 0
        ORDER BY trace_id);
END
$stage$
"""

# One range of the staged rebuild: [low, high), NULL = open. Planned for its
# bounds each time (plan_cache_mode, below), so that it reads just its range.
REBUILD_RANGE = f"""
CREATE FUNCTION {REBUILD_BATCH_FUNCTION}(low text, high text) RETURNS jsonb
LANGUAGE plpgsql AS $range$
#variable_conflict use_variable
DECLARE
    n_upserted bigint;
    n_deleted bigint;
BEGIN
    WITH computed AS MATERIALIZED (
        SELECT * FROM {STAGING_TABLE} AS c
        WHERE (low IS NULL OR c.trace_id >= low) AND (high IS NULL OR c.trace_id < high)
    ), removed AS (
        DELETE FROM {SUMMARIES} AS s
        WHERE (low IS NULL OR s.trace_id >= low) AND (high IS NULL OR s.trace_id < high)
          AND NOT EXISTS (SELECT 1 FROM {STAGING_TABLE} AS c WHERE c.trace_id = s.trace_id)
        RETURNING 1
    ), upserted AS (
        {UPSERT_COMPUTED}
    )
    SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed) INTO n_upserted, n_deleted;
    RETURN jsonb_build_object('upserted', n_upserted, 'deleted', n_deleted);
END
$range$
"""

# The procedure the job CALLs. Its body names its schema (%1$I): a procedure
# that pins its search_path cannot COMMIT. It decides between an incremental
# refresh and a full rebuild, runs it, records it in the state row.
PROCEDURE_BODY = f"""
CREATE PROCEDURE %1$I.{REFRESH_FUNCTION}(full_rebuild boolean DEFAULT false, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $refresh$
#variable_conflict use_variable
DECLARE
    started constant timestamptz := clock_timestamp();
    boundary timestamptz := now() - interval '{WINDOW}';
    state %1$I.{STATE_TABLE};
    backlog bigint;
    limit_keys bigint;
    summaries bigint;
    estimate numeric;
    ranges text[];
    low text;
    result jsonb;
    totals jsonb := jsonb_build_object('upserted', 0, 'deleted', 0);
    reason text;
BEGIN
    IF NOT pg_try_advisory_lock({lock_key_sql(REFRESH_LOCK_CLASS, "%1$L")}) THEN
        outcome := jsonb_build_object('refreshed', false, 'reason', 'another refresher holds the lock');
        RETURN;
    END IF;
    -- otel_traces before the state row, as a TRUNCATE takes them (see TRUNCATED);
    -- a TRUNCATE this waited for has committed, and the state row below says so.
    LOCK TABLE ONLY %1$I.{TRACES_TABLE} IN ACCESS SHARE MODE;
    SELECT * INTO state FROM %1$I.{STATE_TABLE};
    SELECT count(*) INTO backlog FROM %1$I.{DIRTY_TABLE};
    summaries := (SELECT greatest(reltuples, 0) FROM pg_class
                  WHERE oid = to_regclass(format('%%I.{SUMMARIES}', %1$L)));
    limit_keys := coalesce(state.full_refresh_above, greatest(100000, summaries / 3));
    -- the dirty keys, plus about as many traces as the window moved past (NULL: no boundary yet)
    estimate := backlog + summaries * extract(epoch FROM boundary - state.window_boundary)
                                    / extract(epoch FROM interval '{WINDOW}');
    reason := CASE
        WHEN full_rebuild THEN 'asked for'
        WHEN state.rebuild_requested IS NOT NULL THEN state.rebuild_requested
        WHEN state.window_boundary IS NULL THEN 'no window boundary yet'
        WHEN estimate > limit_keys
            THEN format('a backlog of about %%s traces (full refresh above %%s)', round(estimate), limit_keys)
    END;
    IF reason IS NULL THEN
        result := %1$I.{APPLY_FUNCTION}(boundary);
    ELSE
        -- Claim everything now: each range below is read in a later snapshot.
        -- Until the last range is committed the state row asks for a full
        -- rebuild, so that one interrupted halfway (killed, cancelled, failed)
        -- is done again by the next refresh: the keys it claimed are gone.
        DELETE FROM %1$I.{DIRTY_TABLE};
        UPDATE %1$I.{STATE_TABLE}
        SET window_boundary = boundary,
            rebuild_requested = coalesce(rebuild_requested, format('a full rebuild started at %%s has not finished (%%s)', started, reason)),
            rebuild_requested_at = coalesce(rebuild_requested_at, started);
        COMMIT;
        ranges := %1$I.{REBUILD_STAGE_FUNCTION}(boundary, coalesce(state.rows_per_rebuild_range, {ROWS_PER_REBUILD_RANGE}));
        COMMIT;
        low := NULL;
        FOR i IN 1 .. coalesce(array_length(ranges, 1), 0) + 1 LOOP
            result := %1$I.{REBUILD_BATCH_FUNCTION}(low, ranges[i]);
            totals := jsonb_build_object(
                'upserted', (totals->>'upserted')::bigint + (result->>'upserted')::bigint,
                'deleted', (totals->>'deleted')::bigint + (result->>'deleted')::bigint);
            COMMIT;
            low := ranges[i];
        END LOOP;
        result := totals || jsonb_build_object('kind', 'full', 'reason', reason,
                                               'ranges', coalesce(array_length(ranges, 1), 0) + 1);
        TRUNCATE %1$I.{STAGING_TABLE};
        UPDATE %1$I.{STATE_TABLE}
        SET rebuild_requested = NULL, rebuild_requested_at = NULL, last_full_refresh_at = clock_timestamp()
        WHERE rebuild_requested_at IS NULL OR rebuild_requested_at <= started;
    END IF;
    UPDATE %1$I.{STATE_TABLE}
    SET last_refresh_at = clock_timestamp(),
        last_refresh_kind = result->>'kind',
        last_refresh_seconds = extract(epoch FROM clock_timestamp() - started),
        last_refresh_keys = coalesce((result->>'keys')::bigint, (result->>'upserted')::bigint),
        last_refresh_upserted = (result->>'upserted')::bigint,
        last_refresh_deleted = (result->>'deleted')::bigint;
    COMMIT;
    PERFORM pg_advisory_unlock({lock_key_sql(REFRESH_LOCK_CLASS, "%1$L")});
    outcome := result || jsonb_build_object('refreshed', true, 'boundary', boundary,
                                            'seconds', extract(epoch FROM clock_timestamp() - started));
END
$refresh$
"""

CREATE_PROCEDURE = f"""
DO $create$
BEGIN
    EXECUTE format($body${PROCEDURE_BODY}$body$, current_schema());
END
$create$
"""

# Pin every function's search_path to its schema; pg_catalog first where it
# runs as its owner.
PIN_SEARCH_PATHS = f"""
DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION %1$I.{CAPTURE_FUNCTION}() SET search_path = pg_catalog, %1$I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION %1$I.{TRUNCATE_FUNCTION}() SET search_path = pg_catalog, %1$I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION %1$I.{APPLY_FUNCTION}(timestamptz) SET search_path = %1$I, pg_catalog, pg_temp', current_schema());
    -- One index lookup per changed trace: compiling that plan (JIT) costs more than running it.
    EXECUTE format('ALTER FUNCTION %1$I.{APPLY_FUNCTION}(timestamptz) SET jit = off', current_schema());
    EXECUTE format('ALTER FUNCTION %1$I.{REBUILD_STAGE_FUNCTION}(timestamptz, bigint) SET search_path = %1$I, pg_catalog, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION %1$I.{REBUILD_BATCH_FUNCTION}(text, text) SET search_path = %1$I, pg_catalog, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION %1$I.{REBUILD_BATCH_FUNCTION}(text, text) SET plan_cache_mode = force_custom_plan', current_schema());
    EXECUTE format('REVOKE ALL ON FUNCTION %1$I.{CAPTURE_FUNCTION}(), %1$I.{TRUNCATE_FUNCTION}() FROM PUBLIC', current_schema());
END
$pin$
"""

# Last in their transaction: CREATE TRIGGER locks otel_traces (SHARE ROW
# EXCLUSIVE, which inserts wait for) until the transaction commits.
CREATE_TRIGGERS = [
    f"CREATE TRIGGER {CAPTURE_TRIGGERS['INSERT']} AFTER INSERT ON {TRACES_TABLE} "
    f"REFERENCING NEW TABLE AS captured_new FOR EACH STATEMENT EXECUTE FUNCTION {CAPTURE_FUNCTION}()",
    f"CREATE TRIGGER {CAPTURE_TRIGGERS['UPDATE']} AFTER UPDATE ON {TRACES_TABLE} "
    "REFERENCING OLD TABLE AS captured_old NEW TABLE AS captured_new "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {CAPTURE_FUNCTION}()",
    f"CREATE TRIGGER {CAPTURE_TRIGGERS['DELETE']} AFTER DELETE ON {TRACES_TABLE} "
    f"REFERENCING OLD TABLE AS captured_old FOR EACH STATEMENT EXECUTE FUNCTION {CAPTURE_FUNCTION}()",
    f"CREATE TRIGGER {CAPTURE_TRIGGERS['TRUNCATE']} AFTER TRUNCATE ON {TRACES_TABLE} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TRUNCATE_FUNCTION}()",
]


def create_machinery() -> list[str]:
    """Everything but the summaries table: helper tables, functions, then the triggers."""
    return [
        REFUSE_HYPERTABLE,
        CREATE_DIRTY,
        CREATE_STATE,
        INIT_STATE,
        *CREATE_STAGING,
        *HELPER_COMMENTS,
        CAPTURE,
        TRUNCATED,
        APPLY,
        REBUILD_STAGE,
        REBUILD_RANGE,
        CREATE_PROCEDURE,
        PIN_SEARCH_PATHS,
        *CREATE_TRIGGERS,
    ]


def create_summaries(relation: str = SUMMARIES, suffix: str = "") -> list[str]:
    return [*create_table(relation), comment("TABLE", "incremental", relation),
            *create_indexes(relation, suffix)]  # fmt: skip


# Fill a new install: a full rebuild, committed range by range, so it must run
# outside a transaction block (alembic's autocommit block, or psql's autocommit).
BUILD = f"CALL {REFRESH_FUNCTION}(full_rebuild => true)"

# What removes the machinery, triggers first: (kind, name, how to find it).
MACHINERY = [
    *(("TRIGGER", f"{name} ON {TRACES_TABLE}", None) for name in CAPTURE_TRIGGERS.values()),
    ("PROCEDURE", f"{REFRESH_FUNCTION}(boolean, jsonb)", "to_regprocedure"),
    ("FUNCTION", f"{APPLY_FUNCTION}(timestamptz)", "to_regprocedure"),
    ("FUNCTION", f"{REBUILD_BATCH_FUNCTION}(text, text)", "to_regprocedure"),
    ("FUNCTION", f"{REBUILD_STAGE_FUNCTION}(timestamptz, bigint)", "to_regprocedure"),
    ("FUNCTION", f"{CAPTURE_FUNCTION}()", "to_regprocedure"),
    ("FUNCTION", f"{TRUNCATE_FUNCTION}()", "to_regprocedure"),
    ("TABLE", DIRTY_TABLE, "to_regclass"),
    ("TABLE", STATE_TABLE, "to_regclass"),
    ("TABLE", STAGING_TABLE, "to_regclass"),
]
