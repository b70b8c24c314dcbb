"""otel_trace_summaries: one pre-computed row per trace, refreshed by pg_cron.

Revision ID: 00000000000007
Revises: 00000000000001
Create Date: 2026-11-25

What it does
    * Creates the materialized view ``otel_trace_summaries`` over the spans of
      the last 7 days, populated at once and ANALYZEd, with the three indexes
      the dashboard's listing queries use. The unique index on ``trace_id``
      (plain column, no WHERE) is what ``REFRESH ... CONCURRENTLY`` needs.
    * Schedules a pg_cron job, ``*/2 * * * *``, running
      ``REFRESH MATERIALIZED VIEW CONCURRENTLY <schema>.otel_trace_summaries``.
      pg_cron runs each job in a fresh session, so the name is schema-qualified.
      ``cron.schedule`` upserts by job name, so upgrading twice keeps one job.
    * Without pg_cron the view and indexes are still created, no job, and a
      NOTICE says that automatic refresh is off and which command refreshes.

Semantics of a row (the contract; README "Semantics" links the tests)
    One row per trace_id that is neither NULL nor '', over spans with
    ``timestamp > now() - interval '7 days'`` at refresh time.
    ``timestamp`` is the trace's latest span timestamp. The six root columns
    come from ONE root span (parent_span_id NULL or ''; several roots: the
    earliest start_time_unix_nano, unknown starts last, then the smallest
    span_id in byte order, then - between copies of one span - the smallest
    of the other root columns); no root: all NULL. Start/end are min/max over the
    spans; ``duration_ms = (end - start) / 1e6``, never negative, NULL when
    either is unknown. ``service_set``: distinct non-NULL service names, byte
    order, ``'{}'`` when none. ``error_count`` counts status_code = 2
    (STATUS_CODE_ERROR) only; unset (0) and OK (1) are not errors.

Why the decisions are DO blocks
    Whether pg_cron is there is decided by the server when the statement runs,
    so ``alembic upgrade head --sql`` writes a script that gives the same
    result when a DBA applies it with psql. No statement touches ``cron.*``
    unless the extension exists.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "00000000000007"
down_revision: str | Sequence[str] | None = "00000000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW_MARKER = "created by cnpg-trace-summaries"

# An otel_trace_summaries that this project did not create (an older
# hand-written migration, say) would otherwise be kept silently, or fail with a
# bare "already exists".
REFUSE_FOREIGN_VIEW = f"""
DO $guard$
BEGIN
    IF to_regclass('otel_trace_summaries') IS NOT NULL THEN
        RAISE EXCEPTION 'otel_trace_summaries already exists in schema % and was not created by this revision',
            current_schema()
            USING HINT = 'It is probably left from an older hand-written migration. Check nothing else '
                         'depends on it, then DROP MATERIALIZED VIEW otel_trace_summaries and upgrade again.',
                  DETAIL = coalesce(obj_description(to_regclass('otel_trace_summaries'), 'pg_class'),
                                    'no comment; not {VIEW_MARKER}');
    END IF;
END
$guard$
"""

# One pass over the window, one GROUP BY trace_id (see bench/results: it is
# what a refresh spends its time on, and one pass beats a second scan for the
# roots). The root span is picked with min() over an array per root span,
# compared element by element in "C" (byte) order:
#   [1] start_time_unix_nano as 16 hex digits, order-preserving for every bigint
#       (sign bit flipped), or 'z' when unknown, so that unknown starts lose;
#   [2] span_id; then the root's other columns, which only break ties between
#       copies of one root span (same start and span_id).
# Every root column is then read from that one array, so they all come from
# the same span. COLLATE "C" also sorts service_set in byte order.
CREATE_VIEW = """
CREATE MATERIALIZED VIEW otel_trace_summaries AS
SELECT
    trace_id,
    last_span_at AS "timestamp",
    root[2] AS root_span_id,
    root[3] AS root_span_name,
    root[4] AS root_service_name,
    CAST(root[5] AS integer) AS root_span_kind,
    start_time_unix_nano,
    end_time_unix_nano,
    CASE
        WHEN start_time_unix_nano IS NULL OR end_time_unix_nano IS NULL THEN NULL
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            / 1000000 AS double precision)
    END AS duration_ms,
    CAST(root[6] AS integer) AS status_code,
    root[7] AS status_message,
    service_set,
    span_count,
    error_count
FROM (
    SELECT
        trace_id,
        max("timestamp") AS last_span_at,
        min(start_time_unix_nano) AS start_time_unix_nano,
        max(end_time_unix_nano) AS end_time_unix_nano,
        coalesce(
            array_agg(DISTINCT service_name COLLATE "C") FILTER (WHERE service_name IS NOT NULL),
            CAST('{}' AS text[])) AS service_set,
        count(*) AS span_count,
        count(*) FILTER (WHERE status_code = 2) AS error_count,
        min(ARRAY[
                CASE WHEN start_time_unix_nano IS NULL THEN 'z'
                     ELSE lpad(to_hex(start_time_unix_nano # CAST(x'8000000000000000' AS bigint)), 16, '0')
                END,
                span_id, name, service_name, CAST(kind AS text), CAST(status_code AS text), status_message
            ] COLLATE "C") FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '') AS root
    FROM otel_traces
    WHERE "timestamp" > now() - interval '7 days' AND trace_id <> ''
    GROUP BY trace_id
) AS per_trace
WITH DATA
"""

COMMENT_VIEW = f"""
COMMENT ON MATERIALIZED VIEW otel_trace_summaries IS
    'One row per trace over the last 7 days of otel_traces ({VIEW_MARKER}, revision 00000000000007). '
    'Refreshed by pg_cron every 2 minutes where available; else run: '
    'REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries'
"""

CREATE_TRACE_ID_INDEX = (
    "CREATE UNIQUE INDEX idx_trace_summaries_trace_id ON otel_trace_summaries (trace_id)"
)

CREATE_TIMESTAMP_INDEX = (
    'CREATE INDEX idx_trace_summaries_timestamp ON otel_trace_summaries ("timestamp" DESC)'
)

CREATE_SERVICE_TIMESTAMP_INDEX = (
    "CREATE INDEX idx_trace_summaries_service_timestamp "
    'ON otel_trace_summaries (root_service_name, "timestamp" DESC)'
)

ANALYZE_VIEW = "ANALYZE otel_trace_summaries"

# The job name names the database and schema, so that several databases (or
# schemas) on one pg_cron never overwrite each other's job. cron.job.jobname
# is of type name: 63 bytes at most.
SCHEDULE_REFRESH = """
DO $schedule$
DECLARE
    job_name constant text := left(format('otel_trace_summaries:%s.%s', current_database(), current_schema()), 63);
    refresh constant text := format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.otel_trace_summaries', current_schema());
    manual constant text := 'automatic refresh of otel_trace_summaries is OFF and manual refresh is required: '
        'run "' || refresh || '" every 2 minutes (or "trace-summaries refresh --every 120")';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')
       AND current_setting('cron.database_name', true) = current_database()
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_cron;
            RAISE NOTICE 'created extension pg_cron in database %', current_database();
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_cron is preloaded but % may not create it (%): ask an administrator to run '
                '"CREATE EXTENSION pg_cron" in database %, then upgrade again; %',
                current_user, SQLERRM, current_database(), manual;
            RETURN;
        END;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in database %: %', current_database(), manual;
        RETURN;
    END IF;

    PERFORM cron.schedule(job_name, '*/2 * * * *', refresh);
    RAISE NOTICE 'pg_cron job "%" scheduled: % every 2 minutes (*/2 * * * *)', job_name, refresh;
    IF current_setting('cron.use_background_workers', true) IS DISTINCT FROM 'on' THEN
        RAISE NOTICE 'cron.use_background_workers is off: pg_cron jobs connect over libpq to cron.host (%) '
            'as %, which needs a matching pg_hba.conf rule or a password file for the server user',
            coalesce(current_setting('cron.host', true), 'localhost'), current_user;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_cron is installed but % may not schedule jobs (%): ask an administrator to run '
        '"GRANT USAGE ON SCHEMA cron TO %I", then upgrade again; %',
        current_user, SQLERRM, current_user, manual;
END
$schedule$
"""

# cron.unschedule(name) raises for an unknown job, so look the job up first;
# and nothing here touches cron.* where pg_cron is absent.
UNSCHEDULE_REFRESH = """
DO $unschedule$
DECLARE
    job_name constant text := left(format('otel_trace_summaries:%s.%s', current_database(), current_schema()), 63);
    job record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN;
    END IF;
    FOR job IN SELECT jobid FROM cron.job WHERE jobname = job_name LOOP
        PERFORM cron.unschedule(job.jobid);
        RAISE NOTICE 'pg_cron job "%" unscheduled', job_name;
    END LOOP;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'could not unschedule pg_cron job "%" (%): ask an administrator to run '
        '"SELECT cron.unschedule(%L)"', job_name, SQLERRM, job_name;
END
$unschedule$
"""

DROP_VIEW = "DROP MATERIALIZED VIEW IF EXISTS otel_trace_summaries"


def upgrade() -> None:
    """Create the summaries view and its indexes; schedule its refresh."""
    op.execute(REFUSE_FOREIGN_VIEW)
    op.execute(CREATE_VIEW)
    op.execute(COMMENT_VIEW)
    op.execute(CREATE_TRACE_ID_INDEX)
    op.execute(CREATE_TIMESTAMP_INDEX)
    op.execute(CREATE_SERVICE_TIMESTAMP_INDEX)
    op.execute(ANALYZE_VIEW)
    op.execute(SCHEDULE_REFRESH)


def downgrade() -> None:
    """Unschedule the refresh job (where it exists), then drop the view.

    The pg_cron extension is never dropped: other jobs may depend on it.
    """
    op.execute(UNSCHEDULE_REFRESH)
    op.execute(DROP_VIEW)
