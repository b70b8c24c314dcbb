"""otel_traces: the OpenTelemetry span store, created, or adopted without blocking ingest.

Revision ID: 00000000000001
Revises:
Create Date: 2026-11-25

What it does
    Where the migration's schema (``current_schema()``, the first schema on
    its search_path) has no ``otel_traces``, creates it (one row per span)
    with its primary key ``(timestamp, trace_id, span_id)`` and the indexes on
    ``(trace_id)`` and ``(service_name, timestamp DESC)``, and marks it
    ``created by cnpg-trace-summaries``. Where TimescaleDB is installed the new,
    empty table becomes a hypertable on ``timestamp``.

    Where that schema already has an ``otel_traces`` (a collector fills it),
    the table is *adopted*: kept as it is, with its data, its indexes and its
    owner, and a NOTICE says so. Only the indexes the summaries need are added,
    ``idx_otel_traces_trace_id`` and ``idx_otel_traces_timestamp``, and each
    only where no valid index already leads with that column (a btree or
    hash index for trace_id, a btree or BRIN index for timestamp, unpartial,
    in the column's collation). They are built with ``CREATE INDEX
    CONCURRENTLY``, outside the revision's transaction, so inserts go on
    during the build, and marked as this project's in their comment. An
    adopted table is never made a hypertable (that holds ACCESS EXCLUSIVE
    while it copies every span); a NOTICE gives the statement for a
    maintenance window.

What a kill leaves behind, and what repairs it
    The revision is one transaction unless it has an index to build on an
    adopted table; then it commits before the first build (the empty version
    table, on a first run), builds, and records itself in a last transaction.
    Whatever the kill leaves, upgrading again repairs it:

    * Creating the table, or adopting one that needs no index: nothing; the
      revision is not recorded.
    * Adopting, killed during a concurrent index build: the server notices
      the dead client within a second (``client_connection_check_interval``,
      set by env.py) and cancels the build, which leaves that index INVALID;
      the revision is not recorded. Upgrading again drops the INVALID index
      concurrently and builds it again.
    * Killed in the milliseconds between a finished build and its comment:
      the index is valid but not marked as this project's. Upgrading again
      keeps it (it serves the summaries) and records the revision; a
      downgrade leaves it in place, as it does every index it did not build.
    * Killed after the builds but before the version row: the indexes are
      valid and marked; upgrading again finds them and records the revision.

Downgrade
    Drops the indexes this revision built on an adopted table (concurrently,
    so ingest goes on; a kill during a drop leaves that index INVALID, and
    downgrading or upgrading again removes it), and drops ``otel_traces``
    only where this project created it, and only while it is empty, unless
    ``-x drop_trace_data=yes`` says the spans may go. The adopted table, its
    spans and its own indexes are never touched.

Waits
    Every statement that could make ingest wait runs under ``lock_timeout``.
    A concurrent build takes a SHARE UPDATE EXCLUSIVE lock, which inserts,
    updates and deletes never wait for, but it waits for older transactions to
    end; those waits are bounded by ``migration_lock_wait`` instead. A
    partitioned table has no concurrent build: its index ``ON ONLY`` the parent
    takes a SHARE lock on the parent for a catalog-only statement (no data is
    read), so an insert may wait for it, for as long as that statement waits
    for the inserts before it, never past ``lock_timeout``. Each partition's
    index is then built concurrently and attached, which inserts never wait for.
"""

from collections.abc import Sequence

from alembic import context, op

from cnpg_trace_summaries import migration_api as api

CREATED_MARKER = "created by cnpg-trace-summaries"

revision: str = "00000000000001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_OR_ADOPT_TRACE_STORE = f"""
DO $create$
DECLARE
    existing constant regclass := to_regclass(format('%I.otel_traces', current_schema()));
    plain boolean;
BEGIN
    IF existing IS NOT NULL AND coalesce(obj_description(existing, 'pg_class'), '') LIKE '%{CREATED_MARKER}%' THEN
        RAISE NOTICE 'otel_traces in schema % was created by an earlier, interrupted run of this revision: kept',
            current_schema();
        RETURN;
    ELSIF existing IS NOT NULL THEN
        RAISE NOTICE 'otel_traces already exists in schema %: adopting it as it is, data, indexes and owner kept',
            current_schema();
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            -- Dynamic: timescaledb_information only exists where TimescaleDB does.
            EXECUTE 'SELECT count(*) = 0 FROM timescaledb_information.hypertables '
                    'WHERE hypertable_schema = current_schema() AND hypertable_name = ''otel_traces'''
                INTO plain;
            IF plain THEN
                RAISE NOTICE 'the adopted otel_traces stays a plain table: turning it into a hypertable locks it '
                    'while every span is copied. In a maintenance window, run: '
                    'SELECT create_hypertable(%L, %L, migrate_data => true)', existing::text, 'timestamp';
            END IF;
        END IF;
        RETURN;
    END IF;
    CREATE TABLE otel_traces (
        "timestamp" timestamptz NOT NULL,
        "trace_id" text,
        "span_id" text,
        "parent_span_id" text,
        "name" text,
        "kind" integer,
        "start_time_unix_nano" bigint,
        "end_time_unix_nano" bigint,
        "service_name" text,
        "service_version" text,
        "service_instance" text,
        "scope_name" text,
        "scope_version" text,
        "status_code" integer,
        "status_message" text,
        "attributes" text,
        "resource_attributes" text,
        "events" text,
        "links" text,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY ("timestamp", trace_id, span_id)
    );
    COMMENT ON TABLE otel_traces IS
        'OpenTelemetry spans, one row per span ({CREATED_MARKER}, revision 00000000000001)';
    -- A new, empty table: building its indexes here blocks nobody.
    CREATE INDEX idx_otel_traces_trace_id ON otel_traces (trace_id);
    CREATE INDEX idx_otel_traces_service_timestamp ON otel_traces (service_name, "timestamp" DESC);
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format('SELECT create_hypertable(%L, %L)', format('%I.otel_traces', current_schema()), 'timestamp');
        RAISE NOTICE 'otel_traces is a TimescaleDB hypertable on "timestamp"';
    END IF;
END
$create$
"""

# What the summaries need of otel_traces that it lacks: one statement per row,
# in order. An INVALID index of ours (an interrupted build) is dropped and
# built again. An existing index counts only when it is valid, unpartial,
# leads with the column itself (not an expression) in the column's collation,
# and is of a kind that serves the lookups: equality on trace_id (btree,
# hash), ranges of timestamp (btree, brin).
USABLE_ACCESS_METHODS = {"trace_id": ("btree", "hash"), "timestamp": ("btree", "brin")}
TRACE_INDEXES_FOR_SUMMARIES = (
    ("idx_otel_traces_trace_id", "trace_id", "(trace_id)"),
    ("idx_otel_traces_timestamp", "timestamp", '("timestamp")'),
)
_NEEDED = ", ".join(
    f"('{name}', '{column}', '{definition}', "
    f"ARRAY[{', '.join(repr(am) for am in USABLE_ACCESS_METHODS[column])}])"
    for name, column, definition in TRACE_INDEXES_FOR_SUMMARIES
)
PLAN_INDEXES = f"""
WITH store AS (
    SELECT c.oid, c.relkind, c.relnamespace FROM pg_class AS c
    WHERE c.oid = to_regclass(format('%I.otel_traces', current_schema()))
), needed (name, column_name, definition, access_methods) AS (
    VALUES {_NEEDED}
), ours AS (
    SELECT n.name, n.column_name, n.definition, n.access_methods, i.indexrelid, i.indisvalid
    FROM needed AS n CROSS JOIN store
    LEFT JOIN pg_class AS c ON c.relname = n.name AND c.relnamespace = store.relnamespace
    LEFT JOIN pg_index AS i ON i.indexrelid = c.oid AND i.indrelid = store.oid
), covered AS (
    SELECT o.name
    FROM ours AS o CROSS JOIN store
    JOIN pg_attribute AS a ON a.attrelid = store.oid AND a.attname = o.column_name
    JOIN pg_index AS i ON i.indrelid = store.oid AND i.indkey[0] = a.attnum
    JOIN pg_class AS ic ON ic.oid = i.indexrelid
    JOIN pg_am AS am ON am.oid = ic.relam
    WHERE i.indisvalid AND i.indisready AND i.indislive AND i.indpred IS NULL
      AND am.amname = ANY (o.access_methods)
      AND i.indcollation[0] = a.attcollation
), missing AS (
    SELECT ours.* FROM ours WHERE name NOT IN (SELECT name FROM covered)
), partitions AS (
    -- A partitioned table: an index ON ONLY the parent, then one built concurrently on
    -- each partition not yet attached to it, and attached; the parent's becomes valid
    -- when every partition's is attached, and new partitions get theirs from it.
    SELECT m.name, m.definition, ch.oid AS partition, ch.relkind,
           format('%I.%I', chn.nspname, ch.relname) AS qualified,
           chn.nspname AS partition_schema,
           left(m.name, 40) || '_' || left(md5(CAST(ch.oid AS text)), 8) AS index_name,
           (SELECT x.oid FROM pg_class AS x JOIN pg_index AS xi ON xi.indexrelid = x.oid
            WHERE x.relnamespace = ch.relnamespace AND NOT xi.indisvalid
              AND x.relname = left(m.name, 40) || '_' || left(md5(CAST(ch.oid AS text)), 8)) AS leftover
    FROM missing AS m CROSS JOIN store
    JOIN pg_inherits AS inh ON inh.inhparent = store.oid
    JOIN pg_class AS ch ON ch.oid = inh.inhrelid
    JOIN pg_namespace AS chn ON chn.oid = ch.relnamespace
    WHERE store.relkind = 'p'
      AND NOT EXISTS (SELECT 1 FROM pg_inherits AS attached
                      JOIN pg_index AS pi ON pi.indexrelid = attached.inhrelid
                      WHERE attached.inhparent = m.indexrelid AND pi.indrelid = ch.oid)
)
SELECT statement FROM (
    SELECT 1 AS step, name, 0 AS partition, 0 AS substep,
           format('DROP INDEX CONCURRENTLY %I.%I', current_schema(), name) AS statement
    FROM missing WHERE indexrelid IS NOT NULL AND NOT indisvalid
      AND (SELECT relkind FROM store) <> 'p'
    UNION ALL
    SELECT 2, name, 0, 0,
           format(CASE WHEN (SELECT relkind FROM store) = 'p' AND NOT EXISTS (
                           SELECT 1 FROM pg_inherits WHERE inhparent = (SELECT oid FROM store))
                       THEN 'CREATE INDEX IF NOT EXISTS %I ON %I.otel_traces %s'  -- no partition: no data
                       WHEN (SELECT relkind FROM store) = 'p'
                       THEN 'CREATE INDEX IF NOT EXISTS %I ON ONLY %I.otel_traces %s'
                       ELSE 'CREATE INDEX CONCURRENTLY %I ON %I.otel_traces %s' END,
                  name, current_schema(), definition)
    FROM missing
    UNION ALL
    SELECT 3, name, 0, 0, format('COMMENT ON INDEX %I.%I IS %L', current_schema(), name,
                                 '{CREATED_MARKER} on an adopted otel_traces, revision 00000000000001')
    FROM missing
    UNION ALL
    SELECT 4, name, CAST(partition AS bigint), 1, format('DROP INDEX CONCURRENTLY %s', leftover::regclass)
    FROM partitions WHERE leftover IS NOT NULL
    UNION ALL
    SELECT 4, name, CAST(partition AS bigint), 2,
           CASE WHEN relkind = 'p'
                THEN format('DO $sub$ BEGIN RAISE EXCEPTION %L; END $sub$',
                            format('partition %s of otel_traces is itself partitioned: build %s on it '
                                   'by hand (an index ON ONLY it, one per partition, attached), then upgrade again',
                                   qualified, name))
                ELSE format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s %s',
                            index_name, qualified, definition) END
    FROM partitions
    UNION ALL
    SELECT 4, name, CAST(partition AS bigint), 3,
           format('ALTER INDEX %I.%I ATTACH PARTITION %I.%I', current_schema(), name,
                  partition_schema, index_name)
    FROM partitions
) AS plan
WHERE (SELECT oid FROM store) IS NOT NULL
ORDER BY step, name, partition, substep
"""

# The downgrade's counterpart: the indexes this revision built on an adopted
# table (one on a partitioned table cannot be dropped concurrently: a plain
# DROP INDEX removes it and its partitions' in one short statement).
PLAN_INDEX_REMOVAL = f"""
SELECT format(CASE WHEN c.relkind = 'I' THEN 'DROP INDEX IF EXISTS %I.%I'
                   ELSE 'DROP INDEX CONCURRENTLY IF EXISTS %I.%I' END, n.nspname, c.relname)
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indrelid = to_regclass(format('%I.otel_traces', current_schema()))
  AND obj_description(c.oid, 'pg_class') LIKE '{CREATED_MARKER} on an adopted otel_traces%'
ORDER BY c.relname
"""

# {allow_data_loss} is the literal true or false, from -x drop_trace_data=yes.
DROP_TRACE_STORE = f"""
DO $drop$
DECLARE
    allow_data_loss constant boolean := {{allow_data_loss}};
    store constant regclass := to_regclass(format('%I.otel_traces', current_schema()));
BEGIN
    IF store IS NULL THEN
        RETURN;
    END IF;
    IF coalesce(obj_description(store, 'pg_class'), '') NOT LIKE '%{CREATED_MARKER}%' THEN
        RAISE NOTICE 'otel_traces was adopted, not created, by this project: left in place with its data';
        RETURN;
    END IF;
    IF NOT allow_data_loss AND EXISTS (SELECT 1 FROM otel_traces) THEN
        RAISE EXCEPTION 'otel_traces holds spans; the downgrade will not drop them'
            USING HINT = 'Move the spans elsewhere first, or run the downgrade with '
                         '-x drop_trace_data=yes to drop the table and its spans. (A downgrade to '
                         'base has undone the revisions above this one already: the database is '
                         'at 00000000000001, without the summaries.)';
    END IF;
    DROP TABLE otel_traces;
END
$drop$
"""


def run_planned(plan: str) -> None:
    """Run each statement ``plan`` yields, outside a transaction.

    Online, the plan is read inside the revision's transaction, and only when
    it has work does the revision commit what it did so far and run it in
    autocommit mode (so a new or already adopted table keeps the revision one
    transaction). In a ``--sql`` script psql's ``\\gexec`` runs it, so the
    script decides on the server, as the online run does.
    """
    if context.is_offline_mode():
        with op.get_context().autocommit_block():
            op.execute(plan + "\\gexec\n--")
        return
    bind = op.get_bind()
    # As written: the server's names may hold ':' or '%', which are not parameters here.
    as_written = {"no_parameters": True}
    statements = bind.exec_driver_sql(plan, execution_options=as_written).scalars().all()
    if not statements:
        return
    lock_timeout = api.option("lock_timeout")
    # A concurrent build or drop never makes writers wait, but it waits for older
    # transactions to end: it may wait as long as another migrator would.
    patient = api.option("migration_lock_wait")
    with op.get_context().autocommit_block():
        try:
            for statement in statements:
                wait = patient if " CONCURRENTLY " in statement else lock_timeout
                bind.exec_driver_sql(f"SET lock_timeout = '{wait}'", execution_options=as_written)
                bind.exec_driver_sql(statement, execution_options=as_written)
        finally:
            bind.exec_driver_sql(
                f"SET lock_timeout = '{lock_timeout}'", execution_options=as_written
            )


def upgrade() -> None:
    """Create (or adopt) otel_traces, then build the indexes an adopted one lacks."""
    op.execute(CREATE_OR_ADOPT_TRACE_STORE)
    run_planned(PLAN_INDEXES)


def downgrade() -> None:
    """Drop what this revision added: its indexes on an adopted table, or the table it created."""
    run_planned(PLAN_INDEX_REMOVAL)
    allow = api.option("drop_trace_data") == "yes"
    op.execute(DROP_TRACE_STORE.format(allow_data_loss="true" if allow else "false"))
