"""otel_traces: the OpenTelemetry span store, as the CNPG trace store has it.

Revision ID: 00000000000001
Revises:
Create Date: 2026-11-25

What it does
    Creates ``otel_traces`` (one row per span) with its primary key
    ``(timestamp, trace_id, span_id)`` and the indexes on ``(trace_id)`` and
    ``(service_name, timestamp DESC)``. The primary key leads with
    ``timestamp``, so it already serves the 7-day window scan of the summaries
    view; no extra index is added to a write-heavy table for it.

Why it is written this way
    Most databases this project meets already have a trace store, written by
    a collector. An existing ``otel_traces`` is *adopted*: kept as it is, with
    its data, and a NOTICE says so. Only a table created here carries the
    ``created by cnpg-trace-summaries`` comment, and only such a table is ever
    dropped by the downgrade, and only when it is empty (or when
    ``-x drop_trace_data=yes`` says the spans may go).

    Where TimescaleDB is installed the table becomes a hypertable on
    ``timestamp``, as in the CNPG trace store; elsewhere it stays a plain table.

    ``CREATE INDEX IF NOT EXISTS`` still takes a short SHARE lock on the table;
    env.py runs each revision in its own transaction with a ``lock_timeout``,
    so ingest waits at most that long and the lock is gone before the next
    revision builds the summaries view.
"""

from collections.abc import Sequence

from alembic import context, op

revision: str = "00000000000001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATED_MARKER = "created by cnpg-trace-summaries"

CREATE_TRACE_STORE = f"""
DO $create$
BEGIN
    IF to_regclass('otel_traces') IS NOT NULL THEN
        RAISE NOTICE 'otel_traces already exists in schema %: adopting it as it is, data and definition kept',
            current_schema();
        RETURN;
    END IF;
    CREATE TABLE IF NOT EXISTS otel_traces (
        "timestamp"          timestamptz NOT NULL,
        trace_id             text,
        span_id              text,
        parent_span_id       text,
        name                 text,
        kind                 integer,
        start_time_unix_nano bigint,
        end_time_unix_nano   bigint,
        service_name         text,
        service_version      text,
        service_instance     text,
        scope_name           text,
        scope_version        text,
        status_code          integer,
        status_message       text,
        attributes           text,
        resource_attributes  text,
        events               text,
        links                text,
        created_at           timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY ("timestamp", trace_id, span_id)
    );
    COMMENT ON TABLE otel_traces IS
        'OpenTelemetry spans, one row per span ({CREATED_MARKER}, revision 00000000000001)';
END
$create$
"""

CREATE_TRACE_ID_INDEX = (
    "CREATE INDEX IF NOT EXISTS idx_otel_traces_trace_id ON otel_traces (trace_id)"
)

CREATE_SERVICE_TIMESTAMP_INDEX = (
    "CREATE INDEX IF NOT EXISTS idx_otel_traces_service_timestamp "
    'ON otel_traces (service_name, "timestamp" DESC)'
)

# Dynamic SQL: create_hypertable only exists where TimescaleDB is installed.
MAKE_HYPERTABLE_WHERE_TIMESCALEDB = """
DO $hypertable$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables
        WHERE hypertable_schema = current_schema() AND hypertable_name = 'otel_traces'
    ) THEN
        RETURN;
    END IF;
    EXECUTE format(
        'SELECT create_hypertable(%L, %L, if_not_exists => true, migrate_data => true)',
        format('%I.otel_traces', current_schema()), 'timestamp');
    RAISE NOTICE 'otel_traces is now a TimescaleDB hypertable on "timestamp"';
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'otel_traces stays a plain table: % (a TimescaleDB hypertable needs the table owner)',
        SQLERRM;
END
$hypertable$
"""

# {allow_data_loss} is the literal true or false, from -x drop_trace_data=yes.
DROP_TRACE_STORE = f"""
DO $drop$
DECLARE
    allow_data_loss constant boolean := {{allow_data_loss}};
BEGIN
    IF to_regclass('otel_traces') IS NULL THEN
        RETURN;
    END IF;
    IF coalesce(obj_description(to_regclass('otel_traces'), 'pg_class'), '')
            NOT LIKE '%{CREATED_MARKER}%' THEN
        RAISE NOTICE 'otel_traces was adopted, not created, by this project: left in place with its data';
        RETURN;
    END IF;
    IF NOT allow_data_loss AND EXISTS (SELECT 1 FROM otel_traces) THEN
        RAISE EXCEPTION 'otel_traces holds spans; the downgrade will not drop them'
            USING HINT = 'Move the spans elsewhere first, or run the downgrade with '
                         '-x drop_trace_data=yes to drop the table and its spans.';
    END IF;
    DROP TABLE otel_traces;
END
$drop$
"""


def upgrade() -> None:
    """Create (or adopt) otel_traces and its indexes."""
    op.execute(CREATE_TRACE_STORE)
    op.execute(CREATE_TRACE_ID_INDEX)
    op.execute(CREATE_SERVICE_TIMESTAMP_INDEX)
    op.execute(MAKE_HYPERTABLE_WHERE_TIMESCALEDB)


def downgrade() -> None:
    """Drop otel_traces if this project created it and no span would be lost."""
    allow = context.get_x_argument(as_dictionary=True).get("drop_trace_data", "no") == "yes"
    op.execute(DROP_TRACE_STORE.format(allow_data_loss="true" if allow else "false"))
