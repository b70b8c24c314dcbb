"""otel_trace_summaries: one pre-computed row per trace, refreshed by pg_cron.

Revision ID: 00000000000007
Revises: 00000000000001
Create Date: 2026-11-25

What it does
    * Creates the materialized view ``otel_trace_summaries`` over the spans of
      the last 7 days, populated at once and ANALYZEd, with the three indexes
      the dashboard's listing queries use, and autovacuum set for its churn. The unique index on ``trace_id``
      (plain column, no WHERE) is what ``REFRESH ... CONCURRENTLY`` needs.
    * Schedules a pg_cron job, ``*/2 * * * *``, running
      ``REFRESH MATERIALIZED VIEW CONCURRENTLY <schema>.otel_trace_summaries``.
      pg_cron runs each job in a fresh session, so the name is schema-qualified.
      ``cron.schedule`` upserts by job name, so upgrading twice keeps one job.
    * Where pg_cron lives in another database of the server (CNPG's default
      cron.database_name is postgres), an online upgrade connects there with
      the same credentials and uses ``cron.schedule_in_database``; that one
      step commits on its own, after everything else.
    * Without pg_cron the view and indexes are still created, no job, and a
      NOTICE says that automatic refresh is off and which command refreshes.
      Every other case where the job cannot be scheduled (privileges, hidden
      settings) also ends in a NOTICE naming the statement or GRANT needed.
    * With ``-x reader_role=NAME`` (or TRACE_SUMMARIES_READER_ROLE) grants
      SELECT on the view to that existing role, for the dashboard's login.

Semantics of a row (the contract; README "Semantics" links the tests)
    One row per trace_id that is neither NULL nor '', over spans with
    ``timestamp > now() - interval '7 days'`` at refresh time.
    ``timestamp`` is the trace's latest span timestamp. The six root columns
    come from ONE root span (parent_span_id NULL or ''; several roots: the
    earliest start_time_unix_nano, unknown starts last, then the smallest
    span_id in byte order, then - between copies of one span - the smallest
    of the other root columns); no root: all NULL. Start/end are min/max over
    the spans; ``duration_ms = (end - start) / 1e6``, never negative, NULL when
    either is unknown. ``service_set``: distinct non-NULL service names, byte
    order, ``'{}'`` when none. ``error_count`` counts status_code = 2
    (STATUS_CODE_ERROR) only; unset (0) and OK (1) are not errors.

Why the decisions are DO blocks
    Whether pg_cron is there is decided by the server when the statement runs,
    so ``alembic upgrade head --sql`` writes a script that gives the same
    result when a DBA applies it with psql. No statement touches ``cron.*``
    unless the extension exists.
"""

import logging
import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

# Logged like the server's NOTICEs (see env.py), so the person upgrading sees them.
NOTICES = logging.getLogger("cnpg_trace_summaries.notices")

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

# Autovacuum: every concurrent refresh deletes the rows of traces that left
# the window or changed and inserts their new versions. With the default 20 %
# scale factors a 1M-row view would carry up to 200k dead rows (and their index
# entries) for hours between vacuums; at 1 % it is vacuumed about every half
# hour of churn, which keeps its size flat (bench/results, the cycles).
#
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
CREATE MATERIALIZED VIEW otel_trace_summaries
WITH (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000
) AS
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
    schedule_there constant text := format('SELECT cron.schedule_in_database(%L, %L, %L, %L)',
        job_name, '*/2 * * * *', refresh, current_database());
    manual constant text := 'automatic refresh of otel_trace_summaries is OFF and manual refresh is required: '
        'run "' || refresh || '" every 2 minutes (or "trace-summaries refresh --every 120")';
    -- pg_settings hides pg_cron's settings from roles that may not read them: NULL then.
    cron_database constant text := (SELECT setting FROM pg_settings WHERE name = 'cron.database_name');
    background_workers constant text := (SELECT setting FROM pg_settings WHERE name = 'cron.use_background_workers');
    cron_host constant text := (SELECT setting FROM pg_settings WHERE name = 'cron.host');
    has_extension boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
BEGIN
    IF NOT has_extension AND cron_database = current_database()
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_cron;
            has_extension := true;
            RAISE NOTICE 'created extension pg_cron in database %', current_database();
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_cron is preloaded but % may not create it (%): ask an administrator to run '
                '"CREATE EXTENSION pg_cron" in database %, then upgrade again; %',
                current_user, SQLERRM, current_database(), manual;
            RETURN;
        END;
    END IF;

    IF NOT has_extension AND cron_database <> current_database() THEN
        RAISE NOTICE 'pg_cron lives in database %, not in %: an online upgrade schedules the job there next; '
            'a script (--sql) needs this run in database %: %',
            cron_database, current_database(), cron_database, schedule_there;
        RETURN;
    END IF;

    IF NOT has_extension AND cron_database IS NULL
       AND NOT pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') THEN
        RAISE NOTICE 'pg_cron is not installed in database % as far as % can tell (pg_cron''s settings are '
            'hidden from it: GRANT pg_read_all_settings TO % lets the migration tell): %. If the server '
            'preloads pg_cron, an administrator can run "CREATE EXTENSION pg_cron" here when this is its '
            'cron.database_name, or else run in that database: %',
            current_database(), current_user, quote_ident(current_user), manual, schedule_there;
        RETURN;
    END IF;

    IF NOT has_extension THEN
        RAISE NOTICE 'pg_cron is not installed in database %: %', current_database(), manual;
        RETURN;
    END IF;

    PERFORM cron.schedule(job_name, '*/2 * * * *', refresh);
    RAISE NOTICE 'pg_cron job "%" scheduled: % every 2 minutes (*/2 * * * *)', job_name, refresh;
    IF background_workers = 'off' THEN
        RAISE NOTICE 'cron.use_background_workers is off: pg_cron jobs connect over libpq to cron.host (%) '
            'as %, which needs a matching pg_hba.conf rule or a password file for the server user; '
            'with cron.use_background_workers = on they need neither',
            coalesce(cron_host, 'localhost'), current_user;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_cron is installed but % may not schedule jobs (%): ask an administrator to run '
        '"GRANT USAGE ON SCHEMA cron TO %", then upgrade again; %',
        current_user, SQLERRM, quote_ident(current_user), manual;
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
        '"SELECT cron.unschedule(%)"', job_name, SQLERRM, quote_literal(job_name);
END
$unschedule$
"""

DROP_VIEW = "DROP MATERIALIZED VIEW IF EXISTS otel_trace_summaries"

# Where pg_cron lives in another database (CNPG's default cron.database_name
# is postgres): what this database is called there, and the job it needs.
LOCATE_PG_CRON = """
SELECT (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database,
       current_database() AS database,
       left(format('otel_trace_summaries:%s.%s', current_database(), current_schema()), 63) AS job_name,
       format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.otel_trace_summaries', current_schema()) AS command,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS local_extension,
       current_user AS role
"""

SCHEDULE_IN_DATABASE = (
    "SELECT cron.schedule_in_database(:job_name, '*/2 * * * *', :command, :database)"
)

UNSCHEDULE_IN_DATABASE = (
    "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = :job_name AND database = :database"
)

GRANTS_FOR_SCHEDULE_IN_DATABASE = (
    "GRANT USAGE ON SCHEMA cron TO {role}; "
    "GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text, text, text, text, text, boolean) TO {role}"
)

# {role} is an identifier quoted by the dialect, never pasted as it was given.
GRANT_READER = "GRANT SELECT ON otel_trace_summaries TO {role}"


def reader_role() -> str | None:
    """``-x reader_role=NAME``, else TRACE_SUMMARIES_READER_ROLE, else none."""
    role = context.get_x_argument(as_dictionary=True).get("reader_role")
    role = role if role is not None else os.environ.get("TRACE_SUMMARIES_READER_ROLE")
    return role or None


def pg_cron_elsewhere() -> dict | None:
    """Where pg_cron lives in another database of this server, what to schedule there."""
    if context.is_offline_mode():
        return None  # the DO block's NOTICE gave the statement to run there
    found = op.get_bind().execute(sa.text(LOCATE_PG_CRON)).mappings().one()
    if found["local_extension"] or not found["cron_database"]:
        return None
    if found["cron_database"] == found["database"]:
        return None
    return dict(found)


def in_cron_database(found: dict, statement: str) -> None:
    """Run ``statement`` in the database pg_cron lives in, with the same credentials."""
    url = op.get_bind().engine.url.set(database=found["cron_database"])
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement), found)
    finally:
        engine.dispose()


def schedule_where_pg_cron_lives() -> None:
    found = pg_cron_elsewhere()
    if found is None:
        return
    try:
        in_cron_database(found, SCHEDULE_IN_DATABASE)
    except sa.exc.DBAPIError as error:
        quoted = op.get_context().dialect.identifier_preparer.quote(found["role"])
        NOTICES.warning(
            "NOTICE: could not schedule the refresh in database %s, where pg_cron lives (%s). "
            "Ask an administrator to run there: %s; or to grant what it takes: %s. "
            "Until then manual refresh is required: %s",
            found["cron_database"],
            " ".join(str(error.orig).split()),
            f"SELECT cron.schedule_in_database('{found['job_name']}', '*/2 * * * *', "
            f"'{found['command']}', '{found['database']}')",
            GRANTS_FOR_SCHEDULE_IN_DATABASE.format(role=quoted),
            found["command"],
        )
        return
    NOTICES.info(
        'NOTICE: pg_cron job "%s" scheduled in database %s: %s every 2 minutes (*/2 * * * *)',
        found["job_name"],
        found["cron_database"],
        found["command"],
    )


def unschedule_where_pg_cron_lives() -> None:
    found = pg_cron_elsewhere()
    if found is None:
        return
    try:
        in_cron_database(found, UNSCHEDULE_IN_DATABASE)
    except sa.exc.DBAPIError as error:
        NOTICES.warning(
            'NOTICE: could not unschedule pg_cron job "%s" in database %s (%s): ask an '
            "administrator to run there: SELECT cron.unschedule('%s')",
            found["job_name"],
            found["cron_database"],
            " ".join(str(error.orig).split()),
            found["job_name"],
        )
        return
    NOTICES.info(
        'NOTICE: pg_cron job "%s" unscheduled in database %s',
        found["job_name"],
        found["cron_database"],
    )


def upgrade() -> None:
    """Create the summaries view and its indexes; schedule its refresh."""
    op.execute(REFUSE_FOREIGN_VIEW)
    op.execute(CREATE_VIEW)
    op.execute(COMMENT_VIEW)
    op.execute(CREATE_TRACE_ID_INDEX)
    op.execute(CREATE_TIMESTAMP_INDEX)
    op.execute(CREATE_SERVICE_TIMESTAMP_INDEX)
    op.execute(ANALYZE_VIEW)
    role = reader_role()
    if role:
        quoted = op.get_context().dialect.identifier_preparer.quote_identifier(role)
        op.execute(GRANT_READER.format(role=quoted))
    op.execute(SCHEDULE_REFRESH)
    # Last: it commits in another database, outside this migration's transaction.
    schedule_where_pg_cron_lives()


def downgrade() -> None:
    """Unschedule the refresh job (where it exists), then drop the view.

    The pg_cron extension is never dropped: other jobs may depend on it.
    """
    op.execute(UNSCHEDULE_REFRESH)
    unschedule_where_pg_cron_lives()
    op.execute(DROP_VIEW)
