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
    empty table becomes a hypertable on ``timestamp``, in chunks of a day (a
    day's spans are the unit that compression and retention policies act on).

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

    A TimescaleDB hypertable refuses ``CREATE INDEX CONCURRENTLY``. Its index
    goes ``ON ONLY`` the hypertable ``WITH (timescaledb.transaction_per_chunk)``:
    a catalog-only statement that holds a SHARE lock on the hypertable itself
    for about 2 ms (inserts into its chunks may wait that long, never past
    ``lock_timeout``; a statement that times out is tried again). Each chunk
    that lacks a valid index of that definition then gets one with ``CREATE
    INDEX CONCURRENTLY`` (an invalid one, left by a kill, is rebuilt with
    ``REINDEX CONCURRENTLY``), which inserts never wait for; chunks made later
    get it from the hypertable. Measured (tests/test_hypertables.py, two
    upgrades at once over a million spans in six chunks of a day, a collector
    inserting one span at a time under ``lock_timeout = 200ms``): about 2,500
    inserts, none failed, the slowest 12 to 15 ms, no lock wait seen.
"""

import time
from collections.abc import Sequence

from alembic import context, op

from cnpg_trace_summaries import migration_api as api

CREATED_MARKER = "created by cnpg-trace-summaries"

revision: str = "00000000000001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every statement runs with search_path = pg_catalog, pg_temp in a DO block that
# finds its schema first (current_schema()), and puts the caller's path back: no
# name resolves through a schema another role could write to.
PINNED_BLOCK = """/* cnpg-trace-summaries: {purpose} */
DO $block$
DECLARE
    target constant pg_catalog.text := pg_catalog.current_schema();
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
{declare}
    BEGIN
{body}
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$block$"""

CREATE_OR_ADOPT_TRACE_STORE = PINNED_BLOCK.format(
    purpose="create otel_traces, or adopt the one there",
    declare="""        existing constant pg_catalog.regclass := to_regclass(format('%I.%I', target, 'otel_traces'));
        hypertable pg_catalog.bool := false;
        problems pg_catalog.text;""",
    body=f"""        IF existing IS NOT NULL AND coalesce(obj_description(existing, 'pg_class'), '') LIKE '%{CREATED_MARKER}%' THEN
            RAISE NOTICE 'otel_traces in schema % was created by an earlier, interrupted run of this revision: kept', target;
            EXIT work;
        END IF;
        IF existing IS NOT NULL THEN
            -- What the summaries read of a span, in types they can read it as.
            SELECT string_agg(CASE
                       WHEN a.attname IS NULL THEN format('it has no column %I', wanted.name)
                       WHEN wanted.name = 'timestamp' AND a.atttypid = 'timestamp'::regtype THEN
                           'its "timestamp" is timestamp without time zone, which each session would '
                           'read in its own TimeZone (refreshers and triggers alike): convert it in a '
                           'maintenance window, e.g. ALTER TABLE ' || existing::text || ' ALTER COLUMN '
                           '"timestamp" TYPE timestamptz USING "timestamp" AT TIME ZONE ''UTC'' (if its '
                           'values are UTC)'
                       ELSE format('its column %I is %s, not %s', wanted.name,
                                   format_type(a.atttypid, a.atttypmod), wanted.kinds)
                   END, '; ' ORDER BY wanted.position)
            INTO problems
            FROM (VALUES (1, 'timestamp', 'timestamp with time zone', ARRAY['timestamptz']),
                         (2, 'trace_id', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (3, 'span_id', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (4, 'parent_span_id', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (5, 'name', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (6, 'kind', 'an integer', ARRAY['int2', 'int4', 'int8']),
                         (7, 'start_time_unix_nano', 'bigint', ARRAY['int8']),
                         (8, 'end_time_unix_nano', 'bigint', ARRAY['int8']),
                         (9, 'service_name', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (10, 'status_code', 'an integer', ARRAY['int2', 'int4', 'int8']),
                         (11, 'status_message', 'text', ARRAY['text', 'varchar', 'bpchar']))
                 AS wanted(position, name, kinds, types)
            LEFT JOIN pg_attribute AS a
                   ON a.attrelid = existing AND a.attname = wanted.name AND NOT a.attisdropped
            WHERE a.attname IS NULL
               OR NOT (SELECT typname FROM pg_type WHERE oid = a.atttypid) = ANY (wanted.types);
            IF problems IS NOT NULL THEN
                RAISE EXCEPTION 'otel_traces in schema % cannot be adopted: %', target, problems;
            END IF;
            RAISE NOTICE 'otel_traces already exists in schema %: adopting it as it is, data, indexes and owner kept', target;
            IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
                EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                        'WHERE schema_name = $1 AND table_name = $2)' INTO hypertable USING target, 'otel_traces';
                IF NOT hypertable THEN
                    RAISE NOTICE 'the adopted otel_traces stays a plain table: turning it into a hypertable locks it '
                        'while every span is copied. In a maintenance window, run: '
                        'SELECT create_hypertable(%L, %L, migrate_data => true)', existing::text, 'timestamp';
                END IF;
            END IF;
            EXIT work;
        END IF;
        EXECUTE format($create$CREATE TABLE %I.otel_traces (
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
        )$create$, target);
        EXECUTE format('COMMENT ON TABLE %I.otel_traces IS %L', target,
                       'OpenTelemetry spans, one row per span ({CREATED_MARKER}, revision 00000000000001)');
        -- A new, empty table: building its indexes here blocks nobody.
        EXECUTE format('CREATE INDEX idx_otel_traces_trace_id ON %I.otel_traces (trace_id)', target);
        EXECUTE format('CREATE INDEX idx_otel_traces_service_timestamp ON %I.otel_traces '
                       '(service_name, "timestamp" DESC)', target);
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            -- named in the extension's schema: this block resolves nothing through search_path
            EXECUTE format('SELECT %I.create_hypertable(%L, %L, chunk_time_interval => interval %L, '
                           'create_default_indexes => false)',
                           (SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
                            WHERE e.extname = 'timescaledb'),
                           format('%I.otel_traces', target), 'timestamp', '1 day');
            RAISE NOTICE 'otel_traces is a TimescaleDB hypertable on "timestamp", in chunks of a day';
        END IF;""",
)

# The plan: what the summaries need of otel_traces that it lacks, one statement per
# row, in order, into a temporary table that the revision (or psql's \gexec) runs.
PLAN_TABLE = "pg_temp.cnpg_trace_summaries_plan"
READ_PLAN = f"SELECT statement, retry FROM {PLAN_TABLE} ORDER BY step"
DROP_PLAN = f"DROP TABLE IF EXISTS {PLAN_TABLE}"
_NEW_PLAN = f"""        DROP TABLE IF EXISTS {PLAN_TABLE};
        CREATE TEMPORARY TABLE cnpg_trace_summaries_plan (
            step serial, statement text NOT NULL, retry boolean NOT NULL DEFAULT false);"""

# An existing index serves the summaries where it is valid, unpartial, leads with the
# column itself (not an expression) in the column's collation, and is of a kind that
# serves the lookups: equality on trace_id (btree, hash), ranges of timestamp (btree,
# brin). An INVALID index of ours (an interrupted build) is dropped and built again.
_NEEDED = """(VALUES ('idx_otel_traces_trace_id', 'trace_id', '(trace_id)', ARRAY['btree', 'hash']),
                     ('idx_otel_traces_timestamp', 'timestamp', '("timestamp")', ARRAY['btree', 'brin']))
              AS needed(name, column_name, definition, access_methods)"""
_USABLE = """EXISTS (SELECT 1 FROM pg_attribute AS a
                        JOIN pg_index AS i ON i.indrelid = a.attrelid AND i.indkey[0] = a.attnum
                        JOIN pg_class AS ic ON ic.oid = i.indexrelid
                        JOIN pg_am AS am ON am.oid = ic.relam
                        WHERE a.attrelid = {relation} AND a.attname = need.column_name
                          AND i.indisvalid AND i.indisready AND i.indislive AND i.indpred IS NULL
                          AND am.amname = ANY (need.access_methods)
                          AND i.indcollation[0] = a.attcollation)"""

PLAN_INDEXES = PINNED_BLOCK.format(
    purpose="plan the indexes otel_traces lacks",
    declare="""        store constant pg_catalog.regclass := to_regclass(format('%I.%I', target, 'otel_traces'));
        kind pg_catalog.char;
        hypertable pg_catalog.bool := false;
        need pg_catalog.record;
        ours pg_catalog.oid;
        ours_valid pg_catalog.bool;
        part pg_catalog.record;
        index_name pg_catalog.text;
        leftover pg_catalog.oid;""",
    body=f"""{_NEW_PLAN}
        IF store IS NULL THEN
            EXIT work;
        END IF;
        kind := (SELECT relkind FROM pg_class WHERE oid = store);
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                    'WHERE schema_name = $1 AND table_name = $2)' INTO hypertable USING target, 'otel_traces';
        END IF;
        FOR need IN SELECT * FROM {_NEEDED} LOOP
            SELECT i.indexrelid, i.indisvalid INTO ours, ours_valid
            FROM pg_class AS c JOIN pg_index AS i ON i.indexrelid = c.oid
            WHERE c.relname = need.name AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = store)
              AND i.indrelid = store;
            IF hypertable THEN
                -- CREATE INDEX CONCURRENTLY is refused on a hypertable. The index goes ON ONLY
                -- the hypertable (its parent, empty: a catalog-only statement), then one is
                -- built concurrently on each chunk that lacks a valid one; TimescaleDB takes
                -- a chunk's index of the same definition for the hypertable's, and gives new
                -- chunks theirs.
                IF {_USABLE.format(relation="store")} AND ours IS NULL THEN
                    CONTINUE;  -- an index of the collector's own serves the summaries
                END IF;
                IF ours IS NULL THEN
                    INSERT INTO {PLAN_TABLE} (statement, retry) VALUES (format(
                        'CREATE INDEX IF NOT EXISTS %I ON ONLY %I.otel_traces %s WITH (timescaledb.transaction_per_chunk)',
                        need.name, target, need.definition), true);
                    INSERT INTO {PLAN_TABLE} (statement) VALUES (format('COMMENT ON INDEX %I.%I IS %L', target,
                        need.name, '{CREATED_MARKER} on an adopted otel_traces, revision 00000000000001'));
                END IF;
                FOR part IN SELECT ch.oid, format('%I.%I', n.nspname, ch.relname) AS qualified, ch.relname, n.nspname
                            FROM pg_inherits AS inh JOIN pg_class AS ch ON ch.oid = inh.inhrelid
                            JOIN pg_namespace AS n ON n.oid = ch.relnamespace
                            WHERE inh.inhparent = store ORDER BY ch.oid LOOP
                    IF {_USABLE.format(relation="part.oid")} THEN
                        CONTINUE;
                    END IF;
                    index_name := left(part.relname || '_' || need.name, 63);
                    leftover := (SELECT x.oid FROM pg_class AS x JOIN pg_index AS xi ON xi.indexrelid = x.oid
                                 WHERE x.relname = index_name AND x.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = part.oid)
                                   AND xi.indrelid = part.oid AND NOT xi.indisvalid);
                    INSERT INTO {PLAN_TABLE} (statement) VALUES (CASE
                        WHEN leftover IS NOT NULL THEN format('REINDEX INDEX CONCURRENTLY %s', CAST(leftover AS regclass))
                        ELSE format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s %s', index_name, part.qualified, need.definition)
                    END);
                END LOOP;
                CONTINUE;
            END IF;
            IF {_USABLE.format(relation="store")} THEN
                CONTINUE;
            END IF;
            IF kind = 'p' THEN
                -- A partitioned table: an index ON ONLY the parent, then one built concurrently on
                -- each partition not yet attached to it, and attached; the parent's becomes valid
                -- when every partition's is attached, and new partitions get theirs from it.
                INSERT INTO {PLAN_TABLE} (statement) VALUES (format(
                    CASE WHEN EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = store)
                         THEN 'CREATE INDEX IF NOT EXISTS %I ON ONLY %I.otel_traces %s'
                         ELSE 'CREATE INDEX IF NOT EXISTS %I ON %I.otel_traces %s' END,  -- no partition: no data
                    need.name, target, need.definition));
            ELSE
                IF ours IS NOT NULL AND NOT ours_valid THEN
                    INSERT INTO {PLAN_TABLE} (statement)
                    VALUES (format('DROP INDEX CONCURRENTLY %I.%I', target, need.name));
                END IF;
                INSERT INTO {PLAN_TABLE} (statement)
                VALUES (format('CREATE INDEX CONCURRENTLY %I ON %I.otel_traces %s', need.name, target, need.definition));
            END IF;
            INSERT INTO {PLAN_TABLE} (statement) VALUES (format('COMMENT ON INDEX %I.%I IS %L', target,
                need.name, '{CREATED_MARKER} on an adopted otel_traces, revision 00000000000001'));
            IF kind <> 'p' THEN
                CONTINUE;
            END IF;
            FOR part IN SELECT ch.oid, ch.relkind, format('%I.%I', n.nspname, ch.relname) AS qualified,
                               n.nspname AS schema_name
                        FROM pg_inherits AS inh JOIN pg_class AS ch ON ch.oid = inh.inhrelid
                        JOIN pg_namespace AS n ON n.oid = ch.relnamespace
                        WHERE inh.inhparent = store
                          AND NOT EXISTS (SELECT 1 FROM pg_inherits AS attached
                                          JOIN pg_index AS pi ON pi.indexrelid = attached.inhrelid
                                          WHERE attached.inhparent = ours AND pi.indrelid = ch.oid)
                        ORDER BY ch.oid LOOP
                index_name := left(need.name, 40) || '_' || left(md5(CAST(part.oid AS text)), 8);
                leftover := (SELECT x.oid FROM pg_class AS x JOIN pg_index AS xi ON xi.indexrelid = x.oid
                             WHERE x.relname = index_name AND NOT xi.indisvalid
                               AND x.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = part.oid));
                IF leftover IS NOT NULL THEN
                    INSERT INTO {PLAN_TABLE} (statement)
                    VALUES (format('DROP INDEX CONCURRENTLY %s', CAST(leftover AS regclass)));
                END IF;
                INSERT INTO {PLAN_TABLE} (statement) VALUES (CASE WHEN part.relkind = 'p'
                    THEN format('DO $sub$ BEGIN RAISE EXCEPTION %L; END $sub$',
                                format('partition %s of otel_traces is itself partitioned: build %s on it '
                                       'by hand (an index ON ONLY it, one per partition, attached), then upgrade again',
                                       part.qualified, need.name))
                    ELSE format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s %s', index_name,
                                part.qualified, need.definition) END);
                INSERT INTO {PLAN_TABLE} (statement) VALUES (format('ALTER INDEX %I.%I ATTACH PARTITION %I.%I',
                    target, need.name, part.schema_name, index_name));
            END LOOP;
        END LOOP;""",
)

# The downgrade's counterpart: the indexes this revision built on an adopted table.
# One on a partitioned table or a hypertable cannot be dropped concurrently: a plain
# DROP INDEX removes it and its partitions' (or chunks') in one short statement.
PLAN_INDEX_REMOVAL = PINNED_BLOCK.format(
    purpose="plan the removal of the indexes this project built on otel_traces",
    declare="""        store constant pg_catalog.regclass := to_regclass(format('%I.%I', target, 'otel_traces'));
        hypertable pg_catalog.bool := false;""",
    body=f"""{_NEW_PLAN}
        IF store IS NULL THEN
            EXIT work;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                    'WHERE schema_name = $1 AND table_name = $2)' INTO hypertable USING target, 'otel_traces';
        END IF;
        INSERT INTO {PLAN_TABLE} (statement, retry)
        SELECT format(CASE WHEN c.relkind = 'I' OR hypertable THEN 'DROP INDEX IF EXISTS %I.%I'
                           ELSE 'DROP INDEX CONCURRENTLY IF EXISTS %I.%I' END, n.nspname, c.relname),
               c.relkind = 'I' OR hypertable
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE i.indrelid = store
          AND obj_description(c.oid, 'pg_class') LIKE '{CREATED_MARKER} on an adopted otel_traces%'
        ORDER BY c.relname;""",
)

DROP_TRACE_STORE = PINNED_BLOCK.format(
    purpose="drop otel_traces, where this project created it",
    declare="""        store constant pg_catalog.regclass := to_regclass(format('%I.%I', target, 'otel_traces'));
        has_spans pg_catalog.bool;""",
    body=f"""        IF store IS NULL THEN
            EXIT work;
        END IF;
        IF coalesce(obj_description(store, 'pg_class'), '') NOT LIKE '%{CREATED_MARKER}%' THEN
            RAISE NOTICE 'otel_traces was adopted, not created, by this project: left in place with its data';
            EXIT work;
        END IF;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', store) INTO has_spans;
        IF has_spans AND coalesce(current_setting('cnpg_trace_summaries.drop_trace_data', true), '') <> 'yes' THEN
            RAISE EXCEPTION 'otel_traces holds spans; the downgrade will not drop them'
                USING HINT = 'Move the spans elsewhere first, or run the downgrade with '
                             '-x drop_trace_data=yes to drop the table and its spans. (A downgrade to '
                             'base has undone the revisions above this one already: the database is '
                             'at 00000000000001, without the summaries.)';
        END IF;
        EXECUTE format('DROP TABLE %s', store);""",
)

# How often a statement that only waits for a brief lock (an index ON ONLY a
# hypertable's empty parent) is tried again when lock_timeout ends its wait.
RETRIES = 20


def run_planned(plan: str) -> None:
    """Plan, then run each statement of the plan outside a transaction.

    Online, the plan is made inside the revision's transaction, and only when
    it has work does the revision commit what it did so far and run it in
    autocommit mode (so a new or already adopted table keeps the revision one
    transaction). In a ``--sql`` script psql's ``\\gexec`` runs it, so the
    script decides on the server, as the online run does.
    """
    op.execute(plan)
    if context.is_offline_mode():
        with op.get_context().autocommit_block():
            op.execute(f"SELECT statement FROM {PLAN_TABLE} ORDER BY step\\gexec\n--")
            op.execute(DROP_PLAN)
        return
    bind = op.get_bind()
    # As written: the server's names may hold ':' or '%', which are not parameters here.
    as_written = {"no_parameters": True}
    steps = bind.exec_driver_sql(READ_PLAN, execution_options=as_written).all()
    bind.exec_driver_sql(DROP_PLAN, execution_options=as_written)
    if not steps:
        return
    lock_timeout = api.option("lock_timeout")
    # A concurrent build or drop never makes writers wait, but it waits for older
    # transactions to end: it may wait as long as another migrator would.
    patient = api.option("migration_lock_wait")
    with op.get_context().autocommit_block():
        try:
            for statement, retry in steps:
                wait = patient if " CONCURRENTLY " in statement else lock_timeout
                bind.exec_driver_sql(f"SET lock_timeout = '{wait}'", execution_options=as_written)
                for attempt in range(1, RETRIES + 1):
                    try:
                        bind.exec_driver_sql(statement, execution_options=as_written)
                        break
                    except Exception as error:
                        sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
                        if not retry or sqlstate != "55P03" or attempt == RETRIES:
                            raise
                        api.log.info("waited %s for a lock; trying again: %s", wait, statement)
                        time.sleep(0.2 * attempt)
        finally:
            bind.exec_driver_sql(
                f"SET lock_timeout = '{lock_timeout}'", execution_options=as_written
            )


def upgrade() -> None:
    """Create (or adopt) otel_traces, then build the indexes an adopted one lacks."""
    # What the options ask of pg_cron for the summaries (revision 00000000000007) is
    # checked before anything runs: a refusal leaves the database as it was.
    api.check_refresher(api.locate_cron())
    op.execute(CREATE_OR_ADOPT_TRACE_STORE)
    run_planned(PLAN_INDEXES)


def downgrade() -> None:
    """Drop what this revision added: its indexes on an adopted table, or the table it created."""
    run_planned(PLAN_INDEX_REMOVAL)
    api.values(drop_trace_data=api.option("drop_trace_data"))
    op.execute(DROP_TRACE_STORE)
