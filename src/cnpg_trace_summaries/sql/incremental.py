"""The incremental mode: a table kept exact by recomputing only the traces that changed.

The same relation name, the same 14 columns with the same semantics
(:mod:`.summary`), the same three index names. What keeps it exact:

* statement-level ``AFTER INSERT/UPDATE/DELETE`` triggers on otel_traces, with
  transition tables, append the trace_ids a statement touched to
  ``otel_trace_summaries_dirty``: logged, append-only, no unique constraint
  (a deduplicating table loses updates: a key that a running ingest
  transaction writes could be consumed before that transaction commits).
  Spans at or before the stored window boundary are in no summary and will
  never be again, so they are skipped: retention deletes stay cheap.
* row-level triggers do the same where statement-level ones cannot fire: for
  a logical replication subscriber's apply worker (enabled REPLICA: it fires
  row-level triggers only, and only those enabled REPLICA or ALWAYS), and for
  DELETE on a TimescaleDB hypertable (which refuses a DELETE trigger with a
  transition table once compression is enabled). TimescaleDB copies that row
  trigger onto every chunk; the refresh drops it from chunks wholly before the
  window boundary, so deletes of old spans (retention) capture nothing.
* ``AFTER TRUNCATE`` (enabled ALWAYS) asks for a full rebuild.
* partitions and chunks that appear in or leave otel_traces between two
  refreshes (``ATTACH``/``DETACH PARTITION``, ``DROP``, ``drop_chunks``):
  the state row keeps the set of otel_traces' leaf relations with their upper
  time bound; the refresh captures the keys of a new or detached one, and
  rebuilds everything when one that held spans inside the window was dropped.
* ``CALL otel_trace_summaries_refresh()`` (pg_cron, or ``trace-summaries
  refresh``), one refresher at a time (an advisory lock):

  - claims the dirty keys with ``DELETE ... RETURNING``, adds the traces of
    spans between the previous window boundary and the new one, recomputes
    just those with one index lookup per trace, deletes the summaries of
    traces with no span left in the window, and upserts the others only
    where a column changed; all in one transaction, with one snapshot;
  - above a backlog (after an outage, on the first run, after a TRUNCATE)
    rebuilds everything instead (``otel_trace_summaries_rebuild``): claims
    every key, then aggregates the window slice by slice of time into an
    unlogged staging table, then writes it range by range of trace_id, each
    slice and each range a transaction of its own, so that readers never
    wait and no transaction runs long. ``trace-summaries switch`` fills the
    new table the same way.

Why it is exact: a change to a span and its dirty key commit together, so a
claimed key's change is visible to the recomputation in the same snapshot,
and an unclaimed key stays for the next refresh. A summary depends only on
its trace's spans inside the window, so a row can change only through a
dirty key or a span crossing the boundary, and both are recomputed. A full
rebuild claims every key first and reads the window in later snapshots: every
claimed change is in them, and every later change has a key of its own for
the next refresh. Until its last range is committed the state row asks for a
full rebuild, so that one interrupted halfway is done again.

Writes that still bypass capture are listed in the README (direct writes into
a partition or a chunk); ``trace-summaries verify`` finds what they changed
and ``trace-summaries refresh --full`` repairs it.

Security: every function pins ``search_path = pg_catalog, pg_temp`` and
names this project's objects with their schema; the procedures, which cannot
pin a path and still COMMIT, set it at their start and after every COMMIT.
EXECUTE on all of them is revoked from PUBLIC. The capture functions run as
their owner (SECURITY DEFINER), so ingest roles need no grant on the helper
tables. The refresh checks the caller's privileges before it takes a lock,
and holds its lock for one transaction at a time (a full rebuild, which spans many,
keeps other refreshers off between them with a claim in the state row): an error or
a cancel, wherever it lands, leaves no lock behind.

Everything is listed once, in :data:`OBJECTS`, in creation order: the
creation statements, the grants, the drop order (the reverse) and the check
for leftovers all come from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnpg_trace_summaries.contract import (
    APPLY_FUNCTION,
    CAPTURE_FUNCTION,
    CAPTURE_ROW_FUNCTION,
    CAPTURE_ROW_TRIGGERS,
    CAPTURE_TRIGGERS,
    CHILDREN_FUNCTION,
    CREATED_MARKER,
    DIRTY_TABLE,
    RANGE_FUNCTION,
    REBUILD_PROCEDURE,
    REFRESH_FUNCTION,
    REFRESH_LOCK_CLASS,
    STAGE_FUNCTION,
    STAGING_INDEX,
    STAGING_TABLE,
    STATE_TABLE,
    SUMMARIES,
    SUMMARY_COLUMNS,
    TRACES_TABLE,
    TRUNCATE_FUNCTION,
    WINDOW,
    lock_key_sql,
)
from cnpg_trace_summaries.sql.common import STORAGE, create_indexes, record
from cnpg_trace_summaries.sql.render import (
    PINNED_PATH,
    SCHEMA_LITERAL,
    body,
    do_block,
    executes,
    in_schema,
    qualified,
)
from cnpg_trace_summaries.sql.summary import (
    AGGREGATES,
    BOUNDARY,
    COLUMN_LIST,
    TRACES,
    combined_query,
    keyed_query,
    slice_query,
    window_query,
)

KIND = "TABLE"

SUMMARY_TABLE = qualified(SUMMARIES)
DIRTY = qualified(DIRTY_TABLE)
STATE = qualified(STATE_TABLE)
STAGING = qualified(STAGING_TABLE)
LOCK_KEY = lock_key_sql(REFRESH_LOCK_CLASS, SCHEMA_LITERAL)
PIN = f"PERFORM set_config('search_path', '{PINNED_PATH}', true);"

# The job's command, a SQL expression over the schema: every argument given, typed,
# so that no procedure of the same name with fewer arguments is a candidate.
JOB_COMMAND = (
    f"format('CALL %I.{REFRESH_FUNCTION}(false, CAST(NULL AS pg_catalog.jsonb))', {{schema}})"
)
# A full rebuild's defaults, unless the state row says otherwise: the spans one
# slice of the window aggregates, the summary rows one range writes.
SPANS_PER_REBUILD_SLICE = 1_000_000
ROWS_PER_REBUILD_RANGE = 100_000
# A refresh rebuilds everything above this backlog (or a third of the summaries).
FULL_REFRESH_ABOVE = 100_000


# Which otel_traces a trigger is for: every one, or only a plain (or partitioned)
# table, or only a TimescaleDB hypertable.
EVERY_STORE, PLAIN_STORE, HYPERTABLE = "every", "plain", "hypertable"


# -- the kinds of object ---------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    name: str
    create: tuple[str, ...]  # statements (templates)

    kind = "TABLE"

    @property
    def drop(self) -> str:
        return f"DROP TABLE {qualified(self.name)}"

    def exists(self, schema: str = "target") -> str:
        """SQL: whether it is there (``schema``: an expression; a DO block's ``target``)."""
        return f"to_regclass(format('%I.%I', {schema}, '{self.name}')) IS NOT NULL"


@dataclass(frozen=True)
class Routine:
    kind: str  # FUNCTION or PROCEDURE
    name: str
    arguments: str  # the identity argument types, e.g. "timestamptz"
    definition: str  # CREATE ... (template)

    @property
    def signature(self) -> str:
        return f"{qualified(self.name)}({self.arguments})"

    @property
    def create(self) -> tuple[str, ...]:
        return (self.definition, f"REVOKE ALL ON {self.kind} {self.signature} FROM PUBLIC")

    @property
    def drop(self) -> str:
        return f"DROP {self.kind} {self.signature}"

    def exists(self, schema: str = "target") -> str:
        return f"to_regprocedure(format('%I.%I({self.arguments})', {schema}, '{self.name}')) IS NOT NULL"


@dataclass(frozen=True)
class Trigger:
    name: str
    event: str
    level: str  # STATEMENT or ROW
    function: str
    referencing: str = ""
    enabled: str = "O"  # pg_trigger.tgenabled: O (origin, the default), R (replica), A (always)
    store: str = EVERY_STORE

    kind = "TRIGGER"

    @property
    def create(self) -> tuple[str, ...]:
        referencing = f" REFERENCING {self.referencing}" if self.referencing else ""
        statements = [
            f"CREATE TRIGGER {self.name} AFTER {self.event} ON {TRACES}{referencing} "
            f"FOR EACH {self.level} EXECUTE FUNCTION {qualified(self.function)}()"
        ]
        if self.enabled != "O":
            how = {"R": "REPLICA", "A": "ALWAYS"}[self.enabled]
            statements.append(f"ALTER TABLE {TRACES} ENABLE {how} TRIGGER {self.name}")
        return tuple(statements)

    @property
    def drop(self) -> str:
        return f"DROP TRIGGER {self.name} ON {TRACES}"

    def exists(self, schema: str = "target") -> str:
        return (
            f"EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{self.name}' AND tgrelid = "
            f"to_regclass(format('%I.%I', {schema}, '{TRACES_TABLE}')))"
        )

    @property
    def accepted_states(self) -> str:
        """The tgenabled values under which it fires where it must."""
        return {"O": "OA", "R": "RA", "A": "A"}[self.enabled]


# -- tables --------------------------------------------------------------------------------
DIRTY_OBJECT = Table(
    DIRTY_TABLE,
    (
        f"""CREATE TABLE {DIRTY} (trace_id text NOT NULL)
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000)""",
        f"COMMENT ON TABLE {DIRTY} IS 'trace_ids whose summaries must be recomputed, appended by "
        f"triggers on otel_traces and claimed by {REFRESH_FUNCTION}() ({CREATED_MARKER})'",
    ),
)

STATE_OBJECT = Table(
    STATE_TABLE,
    (
        f"""CREATE TABLE {STATE} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    window_boundary timestamptz,
    children jsonb,
    rebuild_requested text,
    rebuild_requested_at timestamptz,
    rebuilding_pid integer,
    rebuilding_since timestamptz,
    full_refresh_above bigint,
    rows_per_rebuild_range bigint CHECK (rows_per_rebuild_range > 0),
    spans_per_rebuild_slice bigint CHECK (spans_per_rebuild_slice > 0),
    installed_at timestamptz NOT NULL DEFAULT now(),
    last_refresh_at timestamptz,
    last_refresh_kind text,
    last_refresh_seconds double precision,
    last_refresh_keys bigint,
    last_refresh_upserted bigint,
    last_refresh_deleted bigint,
    last_full_refresh_at timestamptz,
    last_skip_at timestamptz,
    last_skip_reason text,
    skips_since_refresh bigint NOT NULL DEFAULT 0
)""",
        f"INSERT INTO {STATE} (rebuild_requested, rebuild_requested_at) VALUES ('installed', now())",
        f"COMMENT ON TABLE {STATE} IS 'the incremental refresh''s window boundary, the leaf "
        f"relations of otel_traces it has seen, pending rebuild and last run ({CREATED_MARKER}); "
        f"full_refresh_above: dirty keys above which a refresh rebuilds everything (NULL: a third "
        f"of the summaries, at least {FULL_REFRESH_ABOVE}); rows_per_rebuild_range and "
        f"spans_per_rebuild_slice: the size of a full rebuild''s transactions (NULL: "
        f"{ROWS_PER_REBUILD_RANGE} and {SPANS_PER_REBUILD_SLICE})'",
    ),
)

# Unlogged: scratch that a crash may empty (the rebuild flag then asks again).
# One row per trace and slice of the window; indexed from the start, so that no
# step of a rebuild sorts it whole.
STAGING_OBJECT = Table(
    STAGING_TABLE,
    (
        f"""CREATE UNLOGGED TABLE {STAGING} AS
SELECT trace_id, {AGGREGATES}
FROM {TRACES} GROUP BY trace_id
WITH NO DATA""",
        f"CREATE INDEX {STAGING_INDEX} ON {STAGING} (trace_id)",
        f"COMMENT ON TABLE {STAGING} IS 'a full rebuild''s aggregates of the window, one row per "
        f"trace and slice of time, written to {SUMMARIES} range by range; empty between rebuilds "
        f"({CREATED_MARKER})'",
    ),
)

# -- functions ---------------------------------------------------------------------------------
FUNCTION_SETTINGS = f"SET search_path = {PINNED_PATH}"
# Inside a body, this project's tables as regclass values: dynamic SQL takes them as
# format() arguments, so that no schema name is ever written inside a string literal.
_REGCLASS = "CAST(format('%I.%I', " + SCHEMA_LITERAL + ", '{name}') AS regclass)"


def regclass(name: str) -> str:
    return _REGCLASS.format(name=name)


def function(name: str, arguments: str, signature: str, returns: str, text: str,
             options: str = "") -> Routine:  # fmt: skip
    """A function with its path pinned (``options``: SECURITY DEFINER, STABLE, more SETs)."""
    return Routine(
        "FUNCTION",
        name,
        arguments,
        f"CREATE FUNCTION {qualified(name)}({signature}) RETURNS {returns}\n"
        f"LANGUAGE plpgsql {options} {FUNCTION_SETTINGS} AS {body(text)}",
    )


def procedure(name: str, arguments: str, signature: str, text: str) -> Routine:
    """A procedure: it sets its own path (:data:`PIN`), at its start and after each COMMIT."""
    return Routine(
        "PROCEDURE",
        name,
        arguments,
        f"CREATE PROCEDURE {qualified(name)}({signature})\nLANGUAGE plpgsql AS {body(text)}",
    )


_BOUNDARY_FROM_STATE = f"boundary constant timestamptz := coalesce((SELECT window_boundary FROM {STATE}), '-infinity');"

CAPTURE = function(
    CAPTURE_FUNCTION,
    "",
    "",
    "trigger",
    options="SECURITY DEFINER",
    text=f"""
#variable_conflict use_variable
DECLARE
    {_BOUNDARY_FROM_STATE}
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {DIRTY} (trace_id)
        SELECT DISTINCT trace_id FROM captured_new WHERE "timestamp" > boundary AND trace_id <> '';
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {DIRTY} (trace_id)
        SELECT DISTINCT trace_id FROM captured_old WHERE "timestamp" > boundary AND trace_id <> '';
    ELSE
        INSERT INTO {DIRTY} (trace_id)
        SELECT trace_id FROM captured_new WHERE "timestamp" > boundary AND trace_id <> ''
        UNION
        SELECT trace_id FROM captured_old WHERE "timestamp" > boundary AND trace_id <> '';
    END IF;
    RETURN NULL;
END
""",
)

CAPTURE_ROW = function(
    CAPTURE_ROW_FUNCTION,
    "",
    "",
    "trigger",
    options="SECURITY DEFINER",
    text=f"""
#variable_conflict use_variable
DECLARE
    {_BOUNDARY_FROM_STATE}
BEGIN
    IF TG_OP <> 'DELETE' AND NEW."timestamp" > boundary AND NEW.trace_id <> '' THEN
        INSERT INTO {DIRTY} (trace_id) VALUES (NEW.trace_id);
    END IF;
    IF TG_OP <> 'INSERT' AND OLD."timestamp" > boundary AND OLD.trace_id <> ''
       AND (TG_OP = 'DELETE' OR OLD.trace_id IS DISTINCT FROM NEW.trace_id
            OR NEW."timestamp" <= boundary) THEN
        INSERT INTO {DIRTY} (trace_id) VALUES (OLD.trace_id);
    END IF;
    RETURN NULL;
END
""",
)

# A TRUNCATE holds ACCESS EXCLUSIVE on otel_traces when this trigger updates
# the state row. So every transaction that locks the state row and reads
# otel_traces (the refresh) locks otel_traces first: in the other order, a
# refresh holding the row and a TRUNCATE holding otel_traces would deadlock.
# (The parent alone is enough: a TRUNCATE of the parent locks it first.)
TRUNCATED = function(
    TRUNCATE_FUNCTION,
    "",
    "",
    "trigger",
    options="SECURITY DEFINER",
    text=f"""
BEGIN
    UPDATE {STATE}
    SET rebuild_requested = 'otel_traces was truncated', rebuild_requested_at = clock_timestamp();
    RETURN NULL;
END
""",
)

# otel_traces' leaf relations (partitions, TimescaleDB chunks) against the set the
# state row saw last: {"store": "hypertable" or "plain",
# "snapshot": {oid: {"name", "upper"}}, "added": [oid],
# "detached": [oid] (gone from otel_traces, still there), "dropped": [names of
# gone ones whose spans may be inside the window]}. "upper" is the relation's
# upper time bound where it has one (a range partition on "timestamp", a chunk).
CHILDREN = function(CHILDREN_FUNCTION, "jsonb, timestamptz", "previous jsonb, boundary timestamptz",
                    "jsonb", options="STABLE SECURITY DEFINER", text=rf"""
#variable_conflict use_variable
DECLARE
    store constant oid := (SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                           WHERE n.nspname = {SCHEMA_LITERAL} AND c.relname = '{TRACES_TABLE}');
    hypertable boolean := false;
    snapshot jsonb;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                'WHERE schema_name = $1 AND table_name = $2)'
            INTO hypertable USING {SCHEMA_LITERAL}, '{TRACES_TABLE}';
    END IF;
    IF hypertable THEN
        EXECUTE 'SELECT coalesce(jsonb_object_agg(CAST(CAST(format(''%I.%I'', chunk_schema, chunk_name) AS regclass) AS oid), '
                'jsonb_build_object(''name'', format(''%I.%I'', chunk_schema, chunk_name), ''upper'', range_end)), ''{{}}'') '
                'FROM timescaledb_information.chunks WHERE hypertable_schema = $1 AND hypertable_name = $2'
            INTO snapshot USING {SCHEMA_LITERAL}, '{TRACES_TABLE}';
    ELSE
        SELECT coalesce(jsonb_object_agg(CAST(leaf.relid AS oid), jsonb_build_object(
                   'name', CAST(leaf.relid AS text),
                   'upper', CASE WHEN key.partstrat = 'r' AND key.partnatts = 1 AND key.partattrs[0] = a.attnum
                                 THEN CAST(substring(pg_get_expr(c.relpartbound, c.oid)
                                                     FROM 'TO \(''([^'']*)''\)$') AS timestamptz) END)),
               '{{}}')
        INTO snapshot
        FROM pg_partition_tree(store) AS leaf
        JOIN pg_class AS c ON c.oid = leaf.relid
        LEFT JOIN pg_partitioned_table AS key ON key.partrelid = leaf.parentrelid
        LEFT JOIN pg_attribute AS a ON a.attrelid = leaf.parentrelid AND a.attname = 'timestamp'
        WHERE leaf.isleaf AND leaf.level > 0;
    END IF;
    IF previous IS NULL THEN
        RETURN jsonb_build_object('store', CASE WHEN hypertable THEN '{HYPERTABLE}' ELSE '{PLAIN_STORE}' END,
                                  'snapshot', snapshot, 'added', '[]', 'detached', '[]', 'dropped', '[]');
    END IF;
    RETURN jsonb_build_object(
        'store', CASE WHEN hypertable THEN '{HYPERTABLE}' ELSE '{PLAIN_STORE}' END,
        'snapshot', snapshot,
        'added', coalesce((SELECT jsonb_agg(CAST(k AS bigint)) FROM jsonb_object_keys(snapshot) AS k
                           WHERE NOT previous ? k), '[]'),
        'detached', coalesce((SELECT jsonb_agg(CAST(k AS bigint)) FROM jsonb_object_keys(previous) AS k
                              WHERE NOT snapshot ? k
                                AND EXISTS (SELECT 1 FROM pg_class WHERE oid = CAST(k AS oid))), '[]'),
        'dropped', coalesce((SELECT jsonb_agg(previous->k->>'name') FROM jsonb_object_keys(previous) AS k
                             WHERE NOT snapshot ? k
                               AND NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = CAST(k AS oid))
                               AND (previous->k->>'upper' IS NULL
                                    OR boundary IS NULL
                                    OR CAST(previous->k->>'upper' AS timestamptz) > boundary)), '[]'));
END
""")  # fmt: skip

_SET_COLUMNS = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in SUMMARY_COLUMNS[1:])
_OLD_ROW = ", ".join(f's."{c}"' for c in SUMMARY_COLUMNS[1:])
_NEW_ROW = ", ".join(f'EXCLUDED."{c}"' for c in SUMMARY_COLUMNS[1:])


def upsert_computed(target: str) -> str:
    """Upsert the rows of a CTE named "computed" into ``target``, rewriting only rows that changed."""
    return f"""INSERT INTO {target} AS s ({COLUMN_LIST})
        SELECT {COLUMN_LIST} FROM computed
        ON CONFLICT (trace_id) DO UPDATE SET {_SET_COLUMNS}
        WHERE ({_OLD_ROW}) IS DISTINCT FROM ({_NEW_ROW})
        RETURNING 1"""


# One incremental refresh: claim, add boundary crossers, recompute, apply. The
# caller holds otel_traces and the state row. One index lookup per changed trace:
# compiling that plan (JIT) costs more than running it.
APPLY = function(APPLY_FUNCTION, "timestamptz, timestamptz",
                 "previous timestamptz, new_boundary timestamptz", "jsonb", options="SET jit = off",
                 text=f"""
#variable_conflict use_variable
DECLARE
    n_claimed bigint;
    n_keys bigint;
    n_upserted bigint;
    n_deleted bigint;
BEGIN
    WITH claimed AS (
        DELETE FROM {DIRTY} RETURNING trace_id
    ), crossing AS (
        SELECT trace_id FROM {TRACES}
        WHERE "timestamp" > previous AND "timestamp" <= new_boundary AND trace_id <> ''
    ), keys AS (
        SELECT trace_id FROM claimed UNION SELECT trace_id FROM crossing
    ), computed AS MATERIALIZED (
        {keyed_query("keys", "new_boundary")}
    ), removed AS (
        DELETE FROM {SUMMARY_TABLE} AS s USING keys AS k
        WHERE s.trace_id = k.trace_id
          AND NOT EXISTS (SELECT 1 FROM computed AS c WHERE c.trace_id = k.trace_id)
        RETURNING 1
    ), upserted AS (
        {upsert_computed(SUMMARY_TABLE)}
    )
    SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM keys),
           (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed)
    INTO n_claimed, n_keys, n_upserted, n_deleted;
    RETURN jsonb_build_object('kind', 'incremental', 'claimed', n_claimed, 'keys', n_keys,
                              'upserted', n_upserted, 'deleted', n_deleted);
END
""")  # fmt: skip

# One slice of a full rebuild: the spans in (low, high], where high is the timestamp
# spans_per_slice spans after low (NULL: to the end), aggregated per trace into the
# staging table. Returns {"high", "traces", "spans"}.
STAGE = function(STAGE_FUNCTION, "timestamptz, bigint", "low timestamptz, spans_per_slice bigint",
                 "jsonb", text=f"""
#variable_conflict use_variable
DECLARE
    high constant timestamptz := (SELECT "timestamp" FROM {TRACES} WHERE "timestamp" > low
                                  ORDER BY "timestamp" OFFSET spans_per_slice - 1 LIMIT 1);
    n_traces bigint;
    n_spans bigint;
BEGIN
    WITH staged AS (
        INSERT INTO {STAGING}
        {slice_query("low", "high")}
        RETURNING span_count
    )
    SELECT count(*), coalesce(sum(span_count), 0) INTO n_traces, n_spans FROM staged;
    RETURN jsonb_build_object('high', high, 'traces', n_traces, 'spans', n_spans);
END
""")  # fmt: skip

# One range of a full rebuild: the traces in [low, high) of the staging table,
# where high is the trace_id rows_per_range rows after low (NULL: to the end),
# combined and written into target; target's rows in the range that the staging
# table lacks are deleted. Returns {"high", "upserted", "deleted"}. Planned for its
# bounds each time (dynamic SQL), so that it reads just its range.
_IN_RANGE = "($1 IS NULL OR {column} >= $1) AND ($2 IS NULL OR {column} < $2)"
RANGE = function(RANGE_FUNCTION, "regclass, text, bigint",
                 "target regclass, low text, rows_per_range bigint", "jsonb", text=f"""
#variable_conflict use_variable
DECLARE
    high text := (SELECT trace_id FROM {STAGING} WHERE low IS NULL OR trace_id >= low
                  ORDER BY trace_id OFFSET rows_per_range LIMIT 1);
    n_upserted bigint;
    n_deleted bigint;
BEGIN
    IF high IS NOT NULL AND high = low THEN  -- one trace fills the range: take it whole
        high := (SELECT min(trace_id) FROM {STAGING} WHERE trace_id > low);
    END IF;
    EXECUTE format($range$
        WITH computed AS MATERIALIZED (
            {combined_query("%2$s", _IN_RANGE.format(column="p.trace_id"))}
        ), removed AS (
            DELETE FROM %1$s AS s
            WHERE {_IN_RANGE.format(column="s.trace_id")}
              AND NOT EXISTS (SELECT 1 FROM %2$s AS c WHERE c.trace_id = s.trace_id)
            RETURNING 1
        ), upserted AS (
            {upsert_computed("%1$s")}
        )
        SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed)$range$,
        target, {regclass(STAGING_TABLE)})
    INTO n_upserted, n_deleted USING low, high;
    RETURN jsonb_build_object('high', high, 'upserted', n_upserted, 'deleted', n_deleted);
END
""")  # fmt: skip


# Everything a refresher changes, checked before it takes a lock: a role that may
# not refresh fails at once and holds nothing.
_PRIVILEGES = [
    (TRACES_TABLE, "SELECT"),
    (SUMMARIES, "SELECT, INSERT, UPDATE, DELETE"),
    (DIRTY_TABLE, "SELECT, INSERT, DELETE"),
    (STATE_TABLE, "SELECT, INSERT, UPDATE"),
    (STAGING_TABLE, "SELECT, INSERT, DELETE, TRUNCATE"),
]
MAY_REFRESH = " AND ".join(
    f"has_table_privilege({regclass(table)}, '{privileges}')" for table, privileges in _PRIVILEGES
)
PRIVILEGE_CHECK = f"""IF NOT ({MAY_REFRESH}) THEN
        RAISE EXCEPTION '% may not refresh %.{SUMMARIES}: it needs SELECT on {TRACES_TABLE} and write access to the summaries and their helper tables',
            current_user, quote_ident({SCHEMA_LITERAL})
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Refresh as the role that installed the summaries (their owner).';
    END IF;"""

# A full rebuild spans many transactions, and holds the refresh lock only inside each
# (a transaction-level lock: an error or a cancel, wherever it lands, leaves none held).
# Between them its claim in the state row keeps other refreshers off: the pid and the
# start of the statement that made it. A claim is alive while that statement runs (or,
# when pg_stat_activity hides the session from this role, while the session lives).
_SELF_SINCE = "(SELECT query_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
CLAIM_ALIVE = """(state.rebuilding_pid IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_stat_activity AS a
            WHERE a.pid = state.rebuilding_pid AND a.pid <> pg_backend_pid()
              AND (a.query_start IS NULL
                   OR (a.state = 'active' AND a.query_start = state.rebuilding_since))))"""

# A full rebuild: claim everything now, since each slice below is read in a later
# snapshot. Until the last range is committed the state row asks for a full
# rebuild, so that one interrupted halfway (killed, cancelled, failed) is done
# again by the next refresh.
_CLAIM = f"""    PERFORM pg_advisory_xact_lock({LOCK_KEY});
    -- otel_traces before the state row, as a TRUNCATE takes them
    LOCK TABLE ONLY {TRACES} IN ACCESS SHARE MODE;
    INSERT INTO {STATE} DEFAULT VALUES ON CONFLICT DO NOTHING;
    SELECT * INTO state FROM {STATE} FOR UPDATE;
    IF {CLAIM_ALIVE} THEN
        RAISE EXCEPTION 'a full rebuild of %.{SUMMARIES} by pid % is running (since %)',
                quote_ident({SCHEMA_LITERAL}), state.rebuilding_pid, state.rebuilding_since
            USING ERRCODE = 'lock_not_available', HINT = 'Try again when it is done.';
    END IF;
    boundary := greatest({BOUNDARY}, state.window_boundary);
    children := {qualified(CHILDREN_FUNCTION)}(NULL, boundary)->'snapshot';
    DELETE FROM {DIRTY};
    TRUNCATE {STAGING};
    UPDATE {STATE}
    SET window_boundary = boundary, children = children,
        rebuilding_pid = pg_backend_pid(), rebuilding_since = {_SELF_SINCE},
        rebuild_requested = coalesce(rebuild_requested,
            format('a full rebuild started at %s has not finished (%s)', started, reason)),
        rebuild_requested_at = coalesce(rebuild_requested_at, started);"""
# Each step waits for a refresher's transaction that runs (one that found the claim and
# records its skip), or a migration's.
_STEP_LOCK = f"PERFORM pg_advisory_xact_lock({LOCK_KEY});"
_SLICE = (
    f"step := {qualified(STAGE_FUNCTION)}(low_time, "
    f"coalesce(state.spans_per_rebuild_slice, {SPANS_PER_REBUILD_SLICE}));"
)
_RANGE = (
    f"step := {qualified(RANGE_FUNCTION)}(target, low_id, "
    f"coalesce(state.rows_per_rebuild_range, {ROWS_PER_REBUILD_RANGE}));"
)
_FINISH = f"""    {_STEP_LOCK}
    TRUNCATE {STAGING};
    UPDATE {STATE}
    SET rebuild_requested = NULL, rebuild_requested_at = NULL, last_full_refresh_at = clock_timestamp(),
        last_refresh_at = clock_timestamp(), last_refresh_kind = 'full',
        last_refresh_seconds = extract(epoch FROM clock_timestamp() - started),
        last_refresh_keys = CAST(outcome->>'upserted' AS bigint),
        last_refresh_upserted = CAST(outcome->>'upserted' AS bigint),
        last_refresh_deleted = CAST(outcome->>'deleted' AS bigint),
        skips_since_refresh = 0
    WHERE rebuild_requested_at IS NULL OR rebuild_requested_at <= started;
    UPDATE {STATE} SET rebuilding_pid = NULL, rebuilding_since = NULL
    WHERE rebuilding_pid = pg_backend_pid();"""


def _total(steps: str, key: str) -> str:
    return (f"(SELECT coalesce(sum(CAST(s->>'{key}' AS bigint)), 0) "
            f"FROM jsonb_array_elements({steps}) AS s)")  # fmt: skip


# A full rebuild into target (the summaries, or the table a switch builds beside
# them): claim, slices, ranges, finish; each a transaction that takes the refresh lock
# (a caller that holds it for its transaction goes on holding it).
REBUILD = procedure(REBUILD_PROCEDURE, "regclass, text, jsonb",
                    "target regclass, reason text, INOUT outcome jsonb DEFAULT NULL", text=f"""
#variable_conflict use_variable
DECLARE
    started constant pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    state {STATE};
    boundary pg_catalog.timestamptz;
    children pg_catalog.jsonb;
    low_time pg_catalog.timestamptz;
    low_id pg_catalog.text;
    step pg_catalog.jsonb;
    slices pg_catalog.jsonb := '[]';
    ranges pg_catalog.jsonb := '[]';
    step_started pg_catalog.timestamptz;
BEGIN
    {PIN}
    {PRIVILEGE_CHECK}
{_CLAIM}
    COMMIT;
    {PIN}
    low_time := boundary;
    LOOP
        step_started := clock_timestamp();
        {_STEP_LOCK}
        {_SLICE}
        COMMIT;
        {PIN}
        slices := slices || jsonb_build_array(step || jsonb_build_object(
            'kind', 'slice', 'seconds', extract(epoch FROM clock_timestamp() - step_started)));
        EXIT WHEN step->>'high' IS NULL;
        low_time := CAST(step->>'high' AS timestamptz);
    END LOOP;
    low_id := NULL;
    LOOP
        step_started := clock_timestamp();
        {_STEP_LOCK}
        {_RANGE}
        COMMIT;
        {PIN}
        ranges := ranges || jsonb_build_array(step || jsonb_build_object(
            'kind', 'range', 'seconds', extract(epoch FROM clock_timestamp() - step_started)));
        EXIT WHEN step->>'high' IS NULL;
        low_id := step->>'high';
    END LOOP;
    outcome := jsonb_build_object(
        'kind', 'full', 'reason', reason, 'boundary', boundary,
        'upserted', {_total("ranges", "upserted")}, 'deleted', {_total("ranges", "deleted")},
        'spans', {_total("slices", "spans")},
        'slices', jsonb_array_length(slices), 'ranges', jsonb_array_length(ranges),
        'steps', slices || ranges);
{_FINISH}
    COMMIT;
    {PIN}
    outcome := outcome || jsonb_build_object('seconds', extract(epoch FROM clock_timestamp() - started));
END
""")  # fmt: skip

# Who holds the refresh lock, and whether that session is refreshing: running a
# command on the summaries, or a refresher by name (pg_cron, this project's command).
LOCK_HOLDER = f"""(SELECT jsonb_build_object(
            'pid', a.pid, 'user', a.usename, 'application_name', a.application_name, 'state', a.state,
            'since', coalesce(a.state_change, a.backend_start),
            'refreshing', coalesce(a.application_name = 'pg_cron'
                                   OR a.application_name LIKE 'cnpg-trace-summaries%'
                                   OR (a.state = 'active' AND a.query LIKE '%{SUMMARIES}%'), false))
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = {REFRESH_LOCK_CLASS}
          AND l.objid = CAST((CAST(hashtext({SCHEMA_LITERAL}) AS bigint) + 4294967296) % 4294967296 AS oid)
        LIMIT 1)"""

# A chunk wholly before the window boundary holds no span of any summary, now or later:
# its copy of the row DELETE trigger goes, so that deletes there (retention by DELETE)
# capture nothing and delete compressed batches whole again. Last in the refresh's
# transaction, and only on a chunk free at once (NOWAIT): nobody queues behind it, and
# the lock lasts until the commit, milliseconds. A busy chunk waits for the next refresh;
# one this role does not own keeps its trigger (exact still, only slower).
_PRUNE_DELETE_CAPTURE = f"""        FOR chunk IN
            SELECT CAST(e.key AS oid) FROM jsonb_each(changes->'snapshot') AS e
            WHERE CAST(e.value->>'upper' AS timestamptz) <= boundary
              AND EXISTS (SELECT 1 FROM pg_trigger
                          WHERE tgrelid = CAST(e.key AS oid) AND tgname = '{CAPTURE_ROW_TRIGGERS["DELETE"]}')
        LOOP
            BEGIN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', CAST(chunk AS regclass));
                EXECUTE format('DROP TRIGGER %I ON %s', '{CAPTURE_ROW_TRIGGERS["DELETE"]}', CAST(chunk AS regclass));
            EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN
                NULL;
            END;
        END LOOP;"""

# The procedure the job CALLs: decides between an incremental refresh and a full
# rebuild, runs it, records it in the state row.
REFRESH = procedure(REFRESH_FUNCTION, "boolean, jsonb",
                    "full_rebuild boolean DEFAULT false, INOUT outcome jsonb DEFAULT NULL", text=f"""
#variable_conflict use_variable
DECLARE
    started constant pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    state {STATE};
    boundary pg_catalog.timestamptz;
    holder pg_catalog.jsonb;
    changes pg_catalog.jsonb;
    child pg_catalog.jsonb;
    chunk pg_catalog.oid;
    backlog pg_catalog.int8;
    limit_keys pg_catalog.int8;
    summaries pg_catalog.float8;
    estimate pg_catalog.numeric;
    result pg_catalog.jsonb;
    reason pg_catalog.text;
BEGIN
    {PIN}
    {PRIVILEGE_CHECK}
    IF NOT pg_try_advisory_xact_lock({LOCK_KEY}) THEN
        holder := {LOCK_HOLDER};
        IF holder IS NOT NULL AND NOT CAST(holder->>'refreshing' AS boolean) THEN
            RAISE EXCEPTION 'the refresh lock of %.{SUMMARIES} is held by pid % (user %, application_name %, %), which is not refreshing',
                    quote_ident({SCHEMA_LITERAL}), holder->>'pid', holder->>'user',
                    coalesce(nullif(holder->>'application_name', ''), 'none'),
                    coalesce(holder->>'state', 'state hidden') || ' since ' || coalesce(holder->>'since', '?')
                USING ERRCODE = 'lock_not_available',
                      HINT = format('No refresh can run until that session ends: SELECT pg_terminate_backend(%s)', holder->>'pid');
        END IF;
        -- Another refresher runs: skip, never wait; recorded unless that refresher holds the row.
        UPDATE {STATE}
        SET last_skip_at = clock_timestamp(), skips_since_refresh = skips_since_refresh + 1,
            last_skip_reason = format('another refresher (pid %s) held the lock', holder->>'pid')
        WHERE ctid = (SELECT ctid FROM {STATE} FOR UPDATE SKIP LOCKED);
        outcome := jsonb_build_object('refreshed', false, 'reason',
                                      format('another refresher (pid %s) holds the lock', holder->>'pid'));
        RETURN;
    END IF;
    -- otel_traces before the state row, as a TRUNCATE takes them (see the TRUNCATE
    -- trigger's function); a TRUNCATE this waited for has committed, and the state row says so.
    LOCK TABLE ONLY {TRACES} IN ACCESS SHARE MODE;
    INSERT INTO {STATE} DEFAULT VALUES ON CONFLICT DO NOTHING;
    SELECT * INTO state FROM {STATE} FOR UPDATE;
    IF {CLAIM_ALIVE} THEN  -- a full rebuild runs, between two of its transactions
        UPDATE {STATE}
        SET last_skip_at = clock_timestamp(), skips_since_refresh = skips_since_refresh + 1,
            last_skip_reason = format('a full rebuild (pid %s) was running', state.rebuilding_pid);
        outcome := jsonb_build_object('refreshed', false, 'reason',
                                      format('a full rebuild (pid %s) is running', state.rebuilding_pid));
        RETURN;
    END IF;
    boundary := greatest({BOUNDARY}, state.window_boundary);
    changes := {qualified(CHILDREN_FUNCTION)}(state.children, state.window_boundary);
    summaries := (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = {regclass(SUMMARIES)});
    limit_keys := coalesce(state.full_refresh_above, greatest({FULL_REFRESH_ABOVE}, summaries / 3));
    backlog := (SELECT count(*) FROM (SELECT 1 FROM {DIRTY} LIMIT limit_keys + 1) AS queued);
    -- the dirty keys, plus about as many traces as the window moved past (NULL: no boundary yet)
    estimate := backlog + summaries * extract(epoch FROM boundary - state.window_boundary)
                                    / extract(epoch FROM interval '{WINDOW}');
    reason := CASE
        WHEN full_rebuild THEN 'asked for'
        WHEN state.rebuild_requested IS NOT NULL THEN state.rebuild_requested
        WHEN state.window_boundary IS NULL THEN 'no window boundary yet'
        WHEN jsonb_array_length(changes->'dropped') > 0
            THEN format('leaf relations of otel_traces with spans inside the window were dropped: %s',
                        (SELECT string_agg(d, ', ') FROM jsonb_array_elements_text(changes->'dropped') AS d))
        WHEN estimate > limit_keys
            THEN format('a backlog of about %s traces (full refresh above %s)', round(estimate), limit_keys)
    END;
    IF reason IS NOT NULL THEN
        CALL {qualified(REBUILD_PROCEDURE)}({regclass(SUMMARIES)}, reason, result);
        {PIN}
    ELSE
        -- the spans of a partition or chunk that joined or left otel_traces: their traces change
        FOR child IN SELECT c FROM jsonb_array_elements((changes->'added') || (changes->'detached')) AS c LOOP
            EXECUTE format('INSERT INTO %s (trace_id) SELECT DISTINCT trace_id FROM ONLY %s '
                           'WHERE "timestamp" > $1 AND trace_id <> $2',
                           {regclass(DIRTY_TABLE)}, CAST(CAST(CAST(child AS text) AS oid) AS regclass))
                USING state.window_boundary, '';
        END LOOP;
        result := {qualified(APPLY_FUNCTION)}(state.window_boundary, boundary);
        UPDATE {STATE}
        SET window_boundary = boundary, children = changes->'snapshot',
            last_refresh_at = clock_timestamp(), last_refresh_kind = 'incremental',
            last_refresh_seconds = extract(epoch FROM clock_timestamp() - started),
            last_refresh_keys = CAST(result->>'keys' AS bigint),
            last_refresh_upserted = CAST(result->>'upserted' AS bigint),
            last_refresh_deleted = CAST(result->>'deleted' AS bigint),
            skips_since_refresh = 0;
    END IF;
    IF changes->>'store' = '{HYPERTABLE}' THEN
{_PRUNE_DELETE_CAPTURE}
    END IF;
    outcome := result || jsonb_build_object('refreshed', true, 'boundary', boundary,
                                            'seconds', extract(epoch FROM clock_timestamp() - started));
END
""")  # fmt: skip

# -- triggers -----------------------------------------------------------------------------------
CAPTURE_STATEMENT_TRIGGERS = (
    Trigger(CAPTURE_TRIGGERS["INSERT"], "INSERT", "STATEMENT", CAPTURE_FUNCTION,
            "NEW TABLE AS captured_new"),
    Trigger(CAPTURE_TRIGGERS["UPDATE"], "UPDATE", "STATEMENT", CAPTURE_FUNCTION,
            "OLD TABLE AS captured_old NEW TABLE AS captured_new"),
    Trigger(CAPTURE_TRIGGERS["DELETE"], "DELETE", "STATEMENT", CAPTURE_FUNCTION,
            "OLD TABLE AS captured_old", store=PLAIN_STORE),
    Trigger(CAPTURE_TRIGGERS["TRUNCATE"], "TRUNCATE", "STATEMENT", TRUNCATE_FUNCTION,
            enabled="A"),
)  # fmt: skip
# Row level: on a plain (or partitioned) otel_traces, what a logical replication
# subscriber's apply worker fires (enabled REPLICA: never in ordinary sessions). On a
# hypertable, DELETE only, in every session: TimescaleDB refuses a DELETE trigger with a
# transition table once compression is on. (Logical replication into a hypertable is not
# supported by TimescaleDB; and a chunk created later would get these triggers enabled
# in ordinary sessions: none are installed there.)
CAPTURE_ROW_LEVEL_TRIGGERS = (
    Trigger(CAPTURE_ROW_TRIGGERS["INSERT"], "INSERT", "ROW", CAPTURE_ROW_FUNCTION, enabled="R",
            store=PLAIN_STORE),
    Trigger(CAPTURE_ROW_TRIGGERS["UPDATE"], "UPDATE", "ROW", CAPTURE_ROW_FUNCTION, enabled="R",
            store=PLAIN_STORE),
    Trigger(CAPTURE_ROW_TRIGGERS["DELETE"], "DELETE", "ROW", CAPTURE_ROW_FUNCTION, enabled="R",
            store=PLAIN_STORE),
    Trigger(CAPTURE_ROW_TRIGGERS["DELETE"], "DELETE", "ROW", CAPTURE_ROW_FUNCTION,
            store=HYPERTABLE),
)  # fmt: skip
TRIGGERS = CAPTURE_STATEMENT_TRIGGERS + CAPTURE_ROW_LEVEL_TRIGGERS

# Everything but the summaries table, in creation order; dropped in the reverse.
# The triggers are last: CREATE TRIGGER locks otel_traces (SHARE ROW EXCLUSIVE,
# which inserts wait for) until the transaction commits.
TABLES = (DIRTY_OBJECT, STATE_OBJECT, STAGING_OBJECT)
ROUTINES = (CAPTURE, CAPTURE_ROW, TRUNCATED, CHILDREN, APPLY, STAGE, RANGE, REBUILD, REFRESH)
OBJECTS = (*TABLES, *ROUTINES, *TRIGGERS)


def create_table(relation: str = SUMMARIES) -> list[str]:
    """The table, with the columns the view's definition gives, down to their collations.

    Several columns of the definition are in the "C" collation (the summary's
    byte order). A column with another collation would sort and compare
    differently in the two modes, and every statement a reader has prepared
    would fail after a switch ("cached plan must not change result type").
    """
    return [
        f"CREATE TABLE {qualified(relation)} WITH {STORAGE} AS\n{window_query()}\nWITH NO DATA",
        f"ALTER TABLE {qualified(relation)} ALTER COLUMN trace_id SET NOT NULL",
    ]


def create(relation: str = SUMMARIES, suffix: str = "") -> list[str]:
    """The empty table, its indexes and its record: one DO block and the record."""
    return [
        in_schema(
            *create_table(relation),
            *create_indexes(relation, suffix),
            purpose=f"create the table {relation} (incremental mode) and its indexes",
        ),
        record(KIND, "incremental", relation),
    ]


# Is otel_traces a TimescaleDB hypertable? (PL/pgSQL, in a do_block; sets `hypertable`.)
HYPERTABLE_CHECK = f"""IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                    'WHERE schema_name = $1 AND table_name = $2)'
                INTO hypertable USING target, '{TRACES_TABLE}';
        END IF;"""


# Statement triggers with transition tables fire on hypertables since TimescaleDB 2.18.
TIMESCALEDB_SINCE = (2, 18)
_TIMESCALEDB_VERSION = "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
OLD_TIMESCALEDB_REFUSED = f"""IF CAST(string_to_array(split_part({_TIMESCALEDB_VERSION}, '-', 1), '.') AS int[])
                   < ARRAY[{TIMESCALEDB_SINCE[0]}, {TIMESCALEDB_SINCE[1]}] THEN
                RAISE EXCEPTION 'the incremental mode needs TimescaleDB {".".join(map(str, TIMESCALEDB_SINCE))} or later on a hypertable; this database has TimescaleDB %', {_TIMESCALEDB_VERSION}
                    USING HINT = 'ALTER EXTENSION timescaledb UPDATE, or install the view mode (-x summaries=view)';
            END IF;"""


def triggers_for(store: str) -> tuple[Trigger, ...]:
    return tuple(t for t in TRIGGERS if t.store in (EVERY_STORE, store))


def create_machinery() -> list[str]:
    """Everything but the summaries table: helper tables, functions, then the triggers.

    The triggers depend on the store: on a hypertable, DELETE is captured row by row.
    """
    hypertable = [s for t in triggers_for(HYPERTABLE) for s in t.create]
    plain = [s for t in triggers_for(PLAIN_STORE) for s in t.create]
    return [
        in_schema(
            *(s for obj in (*TABLES, *ROUTINES) for s in obj.create),
            purpose="create the incremental mode's tables and functions",
        ),
        do_block(
            purpose="create the capture triggers on otel_traces",
            plpgsql=f"""        {HYPERTABLE_CHECK}
        IF hypertable THEN
            {OLD_TIMESCALEDB_REFUSED}
{executes(hypertable, "            ")}
        ELSE
{executes(plain, "            ")}
        END IF;""",
            declare="\n        hypertable pg_catalog.bool := false;",
        ),
    ]


# What fills a new install: a full rebuild, committed range by range, so it runs
# outside a transaction block (alembic's autocommit block, or psql's autocommit).
# (CALL by name, found through the schema alone, every argument typed: a CALL that
# commits cannot be dynamic SQL; the procedure pins its own path at once.)
BUILD = do_block(
    purpose="fill otel_trace_summaries (a full rebuild, committed range by range)",
    plpgsql=f"""        IF NOT {REFRESH.exists()} THEN
            EXIT work;  -- another mode is installed (and kept)
        END IF;
        PERFORM set_config('search_path', quote_ident(target), true);
        CALL {REFRESH_FUNCTION}(false, outcome);""",
    declare="\n        outcome pg_catalog.jsonb;",
)
