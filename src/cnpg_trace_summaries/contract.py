"""The contract: every name, interval and identity the database holds us to, defined once.

The revisions, the console command, the benchmark and the tests all read
these. A value here names something that already exists in users' databases
(a relation, a pg_cron job, an advisory lock), so changing one after a release
means a new revision that moves the old object to the new name; the frozen
values are pinned by ``tests/test_contract.py``.
"""

from __future__ import annotations

from typing import Any

PROJECT = "cnpg-trace-summaries"

# Alembic's history of this project, in a version table of its own, so that an
# application's own Alembic history in the same database is left alone.
VERSION_TABLE = "cnpg_trace_summaries_version"
# The revision whose frozen SQL is what this package defines today (tests/test_revisions.py).
HEAD_REVISION = "00000000000007"

# -- relations ------------------------------------------------------------------------
TRACES_TABLE = "otel_traces"
SUMMARIES = "otel_trace_summaries"  # a materialized view, or a table in incremental mode

SUMMARY_INDEXES = (
    "idx_trace_summaries_trace_id",
    "idx_trace_summaries_timestamp",
    "idx_trace_summaries_service_timestamp",
)
UNIQUE_SUMMARY_INDEX = SUMMARY_INDEXES[0]

# Written into the comment of every relation this project creates; only such
# relations are ever dropped or replaced.
CREATED_MARKER = "created by cnpg-trace-summaries"

# The 14 columns of otel_trace_summaries, in order, with their types.
SUMMARY_COLUMN_TYPES = {
    "trace_id": "text",
    "timestamp": "timestamp with time zone",
    "root_span_id": "text",
    "root_span_name": "text",
    "root_service_name": "text",
    "root_span_kind": "integer",
    "start_time_unix_nano": "bigint",
    "end_time_unix_nano": "bigint",
    "duration_ms": "double precision",
    "status_code": "integer",
    "status_message": "text",
    "service_set": "text[]",
    "span_count": "bigint",
    "error_count": "bigint",
}
SUMMARY_COLUMNS = tuple(SUMMARY_COLUMN_TYPES)

# The columns of otel_traces a writer fills, with their types, in order (the
# CNPG trace store's; revision 00000000000001 adds created_at, with a default).
SPAN_COLUMN_TYPES = {
    "timestamp": "timestamptz",
    "trace_id": "text",
    "span_id": "text",
    "parent_span_id": "text",
    "name": "text",
    "kind": "integer",
    "start_time_unix_nano": "bigint",
    "end_time_unix_nano": "bigint",
    "service_name": "text",
    "service_version": "text",
    "service_instance": "text",
    "scope_name": "text",
    "scope_version": "text",
    "status_code": "integer",
    "status_message": "text",
    "attributes": "text",
    "resource_attributes": "text",
    "events": "text",
    "links": "text",
}
SPAN_COLUMNS = tuple(SPAN_COLUMN_TYPES)


def span_columns_ddl(not_null: tuple[str, ...] = ("timestamp",), indent: str = "    ") -> str:
    """otel_traces' column definitions, for a CREATE TABLE."""
    return f",\n{indent}".join(
        f'"{name}" {kind}' + (" NOT NULL" if name in not_null else "")
        for name, kind in SPAN_COLUMN_TYPES.items()
    )


# Indexes of otel_traces that the summaries need: (name, leading column, definition).
# Revision 00000000000001 creates a missing one concurrently on an adopted table.
TRACE_INDEXES_FOR_SUMMARIES = (
    ("idx_otel_traces_trace_id", "trace_id", "(trace_id)"),
    ("idx_otel_traces_timestamp", "timestamp", '("timestamp")'),
)

# -- incremental mode -------------------------------------------------------------------
# Every object of the incremental mode that deployed databases hold, by name. What
# each one is, and in which order they are created and dropped, is the one list in
# cnpg_trace_summaries.sql.incremental (OBJECTS).
DIRTY_TABLE = "otel_trace_summaries_dirty"
STATE_TABLE = "otel_trace_summaries_state"
STAGING_TABLE = "otel_trace_summaries_rebuild"
STAGING_INDEX = "otel_trace_summaries_rebuild_trace_id"
REFRESH_FUNCTION = "otel_trace_summaries_refresh"  # the procedure the job CALLs
REBUILD_PROCEDURE = "otel_trace_summaries_rebuild"
APPLY_FUNCTION = "otel_trace_summaries_apply_changes"
STAGE_FUNCTION = "otel_trace_summaries_rebuild_slice"
RANGE_FUNCTION = "otel_trace_summaries_rebuild_range"
CHILDREN_FUNCTION = "otel_trace_summaries_children"
CAPTURE_FUNCTION = "otel_trace_summaries_capture"
CAPTURE_ROW_FUNCTION = "otel_trace_summaries_capture_row"
TRUNCATE_FUNCTION = "otel_trace_summaries_truncated"
CAPTURE_TRIGGERS = {
    "INSERT": "otel_trace_summaries_capture_insert",
    "UPDATE": "otel_trace_summaries_capture_update",
    "DELETE": "otel_trace_summaries_capture_delete",
    "TRUNCATE": "otel_trace_summaries_capture_truncate",
}
# Row-level capture: what a logical replication subscriber's apply worker fires
# (enabled REPLICA), and DELETE on a hypertable, where TimescaleDB refuses a
# DELETE trigger with a transition table once compression is on (enabled ALWAYS).
CAPTURE_ROW_TRIGGERS = {
    "INSERT": "otel_trace_summaries_capture_row_insert",
    "UPDATE": "otel_trace_summaries_capture_row_update",
    "DELETE": "otel_trace_summaries_capture_row_delete",
}

# -- both modes --------------------------------------------------------------------------
# What a monitoring system (CNPG's exporter, as pg_monitor) reads: cheap, works on a standby.
METRICS_FUNCTION = "otel_trace_summaries_metrics"
# The mode is recorded in the summaries relation's comment (it survives pg_dump
# --schema-only), as "mode=<name>", with the refresh interval and the install time.
MODES = ("view", "incremental")

# -- the window and the schedule -------------------------------------------------------------
WINDOW = "7 days"
WINDOW_DAYS = 7
REFRESH_SCHEDULE = "*/2 * * * *"
REFRESH_INTERVAL_SECONDS = 120
REFRESH_EVERY = f"every {REFRESH_INTERVAL_SECONDS // 60} minutes"  # for people, in messages
# What refreshes where pg_cron does not.
FALLBACK_REFRESHER = f"trace-summaries refresh --every {REFRESH_INTERVAL_SECONDS}"

# pg_cron's default database, and CloudNativePG's.
DEFAULT_CRON_DATABASE = "postgres"

# OTLP status codes.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

# -- identities ---------------------------------------------------------------------------------
# The pg_cron job that refreshes the summaries of one schema of one database,
# as a SQL expression over {database} and {schema} (SQL expressions themselves).
# cron.job.jobname is a `name`: 63 bytes at most. A name that fits, whose
# database name has no '.' and whose names have no '~', is kept readable:
# otel_trace_summaries:<db>.<schema>. Any other is cut, at a character
# boundary, to 52 bytes and given '~' and a hash of both names (quoted, so the
# split is unambiguous): long and non-ASCII names never share a job, `name`
# never cuts them again, and no readable name looks like a hashed one.
JOB_NAME_SQL = """(SELECT CASE
    WHEN octet_length(job.readable) <= 63 AND strpos({database}, '.') = 0
         AND strpos({database} || {schema}, '~') = 0 THEN job.readable
    ELSE (SELECT left(job.readable, n) FROM generate_series(least(char_length(job.readable), 52), 0, -1) AS n
          WHERE octet_length(left(job.readable, n)) <= 52 LIMIT 1)
         || '~' || left(md5(quote_ident({database}) || '.' || quote_ident({schema})), 10)
    END
FROM (SELECT 'otel_trace_summaries:' || {database} || '.' || {schema} AS readable) AS job)"""

# Advisory locks, as the two int4 keys of pg_advisory_lock(int4, int4); the
# second is the schema, so that schemas of one database migrate independently.
MIGRATION_LOCK_CLASS = 7_362_001  # env.py: one migrator at a time
REFRESH_LOCK_CLASS = 7_362_002  # one refresher at a time (console command, incremental job)


def job_name_sql(database: str = "current_database()", schema: str = "current_schema()") -> str:
    """:data:`JOB_NAME_SQL` over two SQL expressions (by default: here)."""
    return JOB_NAME_SQL.format(database=database, schema=schema)


def lock_key_sql(lock_class: int, schema: str = "current_schema()") -> str:
    """The two keys of an advisory lock for ``schema`` (a SQL expression)."""
    return f"{lock_class}, hashtext({schema})"


def job_name(conn: Any, database: str, schema: str) -> str:
    """The refresh job's name for ``schema`` in ``database``, as the server computes it.

    ``conn`` is any psycopg connection: the rule is the SQL above, never a copy.
    """
    return conn.execute(
        f"SELECT {job_name_sql('%(database)s::text', '%(schema)s::text')}",
        {"database": database, "schema": schema},
    ).fetchone()[0]


def refresh_command(schema_sql: str, mode: str) -> str:
    """The SQL expression (over a schema expression) of the command the job runs."""
    if mode == "view":
        return f"format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.{SUMMARIES}', {schema_sql})"
    return f"format('CALL %I.{REFRESH_FUNCTION}()', {schema_sql})"
