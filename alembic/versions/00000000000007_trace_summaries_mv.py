"""otel_trace_summaries: one pre-computed row per trace, refreshed by pg_cron.

Revision ID: 00000000000007
Revises: 00000000000001
Create Date: 2026-11-25

What it does
    * By default (``-x summaries=view``), the spec's design: the materialized
      view ``otel_trace_summaries`` over the spans of the last 7 days,
      populated at once and ANALYZEd, with the three indexes the dashboard's
      listing queries use (the unique one on ``trace_id``, a plain column with
      no WHERE, is what ``REFRESH ... CONCURRENTLY`` needs), and autovacuum set
      for its churn. A pg_cron job, ``*/2 * * * *`` (``-x refresh_interval``:
      another), runs ``REFRESH MATERIALIZED VIEW CONCURRENTLY
      <schema>.otel_trace_summaries``.
    * With ``-x summaries=incremental``: a table of the same name, columns,
      semantics and index names, kept exact by triggers on otel_traces and a
      refresh that recomputes only what changed; the job runs
      ``CALL <schema>.otel_trace_summaries_refresh(false, NULL)``.
    * The relation's comment records the mode, the refresh interval and the
      install time; everything that reads or re-creates the job follows it.
    * The job is named by cnpg_trace_summaries.contract's rule, upserted by
      name, and scheduled where pg_cron lives: in this database, or in another
      one through cron.schedule_in_database, which commits on its own and is
      therefore the last step.
    * Where no job can be scheduled, the summaries are still created, and a
      NOTICE (logged at WARNING) says that automatic refresh is OFF and what
      to run or grant; ``-x require_refresh=yes`` fails the upgrade instead.
    * ``-x reader_role=NAME`` grants SELECT on the summaries to that role.

Every statement runs with ``search_path = pg_catalog, pg_temp`` and names
this project's objects with their schema; every function pins that path.
The SQL is frozen below: this revision does what it did on the day it was
released, whatever the package defines since.

Steps, and what a kill or a failure leaves behind
    1. Where pg_cron cannot run the job as asked (``require_refresh=yes``
       without pg_cron, an interval in seconds with pg_cron before 1.5), the
       upgrade stops before anything runs.
    2. In a transaction of its own: refuse an otel_trace_summaries this
       project did not create; keep a complete install (a database restored
       from a dump, whose version table came back empty: its mode is never
       changed); remove what an interrupted run or switch left. Capture
       triggers lock otel_traces only for as long as they take to drop.
    3. One transaction creates the summaries (the view, filled and indexed;
       or the empty table with its helper tables, functions and capture
       triggers, the triggers last), grants ``reader_role``, and schedules
       the job where pg_cron lives in this database: a failure or a kill
       leaves nothing, and the revision is not recorded.
    4. Incremental mode: the first full build commits slice by slice and
       range by range; a kill leaves the mode installed with a full rebuild
       pending, which the job (or upgrading again) finishes.
    5. Where pg_cron lives in another database, the job is scheduled last.
       When that fails with ``require_refresh=yes``, what this run installed
       is removed again. A kill just before the final commit leaves a job
       whose runs fail until upgrading again, which upserts the same job.

Downgrade
    Removes whichever mode is installed, completely (relation, triggers,
    functions, helper tables), under ``lock_timeout``, and then the job: in this
    database in the same transaction, or in pg_cron's database as the last
    step, so that a downgrade that fails leaves both the summaries and their
    job. It waits for a running refresh (the refresh lock) and for readers of
    the summaries before it drops the capture triggers, so that ingest waits
    only for the drop itself, never for a refresh or a dashboard's query; when
    one of them holds on past ``lock_timeout`` it fails and changes nothing.
    pg_cron itself is never dropped.

Why the decisions are DO blocks
    Whether pg_cron is here, and whether an install is kept, is decided by the
    server when the statement runs, so ``alembic upgrade head --sql`` writes a
    script that gives the same result when a DBA applies it with psql.
"""

from collections.abc import Sequence

from alembic import op

from cnpg_trace_summaries import migration_api as api

revision: str = "00000000000007"
down_revision: str | Sequence[str] | None = "00000000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the summaries in the chosen mode (or keep those installed), then schedule them."""
    mode = api.option("summaries")
    location = api.locate_cron()
    api.check_refresher(location)  # step 1
    api.autocommit(PREPARE)  # step 2
    api.values(  # step 3
        refresh_interval=api.option("refresh_interval"),
        reader_role=api.option("reader_role"),
        require_refresh=api.option("require_refresh"),
        cron_database=api.option("cron_database"),
    )
    op.execute(DECIDE)
    installing = api.installing()
    for statement in INSTALL[mode]:
        op.execute(statement)
    op.execute(GRANT_READER)
    if not api.elsewhere(location):
        op.execute(SCHEDULE_HERE)
    if BUILD[mode] is not None:  # step 4
        api.autocommit(BUILD[mode])
    if not api.elsewhere(location):
        return
    try:  # step 5
        api.log.info("NOTICE: %s", api.schedule_elsewhere(location, JOB))
    except api.CronError as error:
        if api.option("require_refresh") == "yes":
            if installing and BUILD[mode] is not None:  # committed by the build: remove it again
                api.autocommit(UNINSTALL)
            raise api.MigrationError(
                f"{error} (require_refresh=yes: nothing was changed)"
            ) from None
        api.log.warning(
            "NOTICE: %s. Until then automatic refresh of otel_trace_summaries is OFF and manual "
            "refresh is required: trace-summaries refresh --every %s",
            error,
            api.option("refresh_interval"),
        )


def downgrade() -> None:
    """Remove whichever mode is installed, then its job; pg_cron itself stays."""
    location = api.locate_cron()
    api.values(offline="yes" if api.offline() else "no")
    op.execute(UNINSTALL)
    op.execute(UNSCHEDULE_HERE)
    if api.elsewhere(location):
        # Last: it commits in another database. A failure raises, and rolls the drop back.
        try:
            removed = api.unschedule_elsewhere(location)
        except api.CronError as error:
            raise api.MigrationError(str(error)) from None
        if removed:
            api.log.info("NOTICE: %s", removed)
    elif warning := api.cron_not_found_warning(location):
        api.log.warning("NOTICE: %s", warning)


# -- frozen SQL: rendered by `python -m cnpg_trace_summaries.dev.freeze`; never edit --
PREPARE = r"""/* cnpg-trace-summaries: check what is installed: keep it, or remove what an interrupted run left */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        existing pg_catalog.regclass;
        comment pg_catalog.text;
        recorded pg_catalog.text;
    BEGIN
        existing := to_regclass(format('%I.%I', target, 'otel_trace_summaries'));
        comment := coalesce(obj_description(existing, 'pg_class'), '');
        IF existing IS NOT NULL AND comment NOT LIKE '%created by cnpg-trace-summaries%' THEN
            RAISE EXCEPTION 'otel_trace_summaries already exists in schema % and was not created by this project', target
                USING HINT = 'It is probably left from an older hand-written migration. Check nothing else '
                             'depends on it, then DROP MATERIALIZED VIEW otel_trace_summaries and upgrade again.',
                      DETAIL = coalesce(nullif(comment, ''), 'no comment; not created by cnpg-trace-summaries');
        END IF;
        recorded := substring(comment from 'mode=([a-z_]+);');
        IF (recorded = 'view' AND (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm')
           OR (recorded = 'incremental' AND (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' AND to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL AND to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL AND to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL AND to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL AND to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL AND to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL AND to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL AND to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL AND to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL AND to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL AND to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL AND to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL) THEN
            RAISE NOTICE 'otel_trace_summaries in schema % is installed in % mode: kept as it is', target, recorded;
            EXIT work;
        END IF;
        IF existing IS NOT NULL OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_next')) IS NOT NULL
           OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL OR to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL OR to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL OR to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL OR to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL OR to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL OR to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_truncate' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_metrics')) IS NOT NULL THEN
            RAISE NOTICE 'otel_trace_summaries in schema % was left incomplete by an interrupted run: removing it to build it again',
                target;
        PERFORM pg_advisory_xact_lock(7362002, hashtext(target));
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' THEN
            EXECUTE format($template$LOCK TABLE %1$I.otel_trace_summaries IN ACCESS EXCLUSIVE MODE$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'r' THEN
            EXECUTE format($template$LOCK TABLE %1$I.otel_trace_summaries_next IN ACCESS EXCLUSIVE MODE$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries_next$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_delete ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_update ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_insert ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_truncate' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_truncate ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_delete ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_update ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_insert ON %1$I.otel_traces$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL THEN
            EXECUTE format($template$DROP PROCEDURE %1$I.otel_trace_summaries_refresh(boolean, jsonb)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL THEN
            EXECUTE format($template$DROP PROCEDURE %1$I.otel_trace_summaries_rebuild(regclass, text, jsonb)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_rebuild_range(regclass, text, bigint)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_rebuild_slice(timestamptz, bigint)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_apply_changes(timestamptz, timestamptz)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_children(jsonb, timestamptz)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_truncated()$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_rebuild$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_state$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_dirty$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries_next$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'r' THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_next$template$, target);
        END IF;
        EXECUTE format($template$DROP FUNCTION IF EXISTS %1$I.otel_trace_summaries_metrics()$template$, target);
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$"""

DECIDE = r"""/* cnpg-trace-summaries: decide whether this run installs the summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        PERFORM set_config('cnpg_trace_summaries.installing',
            CASE WHEN to_regclass(format('%I.%I', target, 'otel_trace_summaries')) IS NULL THEN 'yes' ELSE 'no' END, true);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$"""

INSTALL = {
    "view": (
        r"""/* cnpg-trace-summaries: build the materialized view otel_trace_summaries and its indexes */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        started pg_catalog.timestamptz;
        took pg_catalog.float8;
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        IF current_setting('cnpg_trace_summaries.refresh_interval', true) ~ 's$' THEN
            RAISE EXCEPTION 'the view mode refreshes at most every minute (refresh_interval=% asks for more): it rescans the whole window each time',
                    current_setting('cnpg_trace_summaries.refresh_interval', true)
                USING HINT = 'Use -x summaries=incremental for intervals in seconds, or a refresh_interval of 1min or more.';
        END IF;
        started := clock_timestamp();
        EXECUTE format($template$CREATE MATERIALIZED VIEW %1$I.otel_trace_summaries
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
        -- times 0.000001, not divided by 1000000: the product is exact (6 decimals),
        -- so the cast rounds once, as (end - start) / 1e6 in Python does; a numeric
        -- division rounds to 16 digits first, and then the double can differ.
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            * 0.000001 AS double precision)
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
    FROM %1$I.otel_traces
    WHERE "timestamp" > (now() AT TIME ZONE 'UTC' - interval '7 days') AT TIME ZONE 'UTC' AND trace_id <> '' AND TRUE
    GROUP BY trace_id
) AS per_trace
WITH DATA$template$, target);
        took := extract(epoch FROM clock_timestamp() - started);
        IF took > (CASE
        WHEN current_setting('cnpg_trace_summaries.refresh_interval', true) ~ '^[0-9]+s$' THEN CAST(rtrim(current_setting('cnpg_trace_summaries.refresh_interval', true), 's') AS int)
        WHEN current_setting('cnpg_trace_summaries.refresh_interval', true) ~ '^[0-9]+min$' THEN CAST(left(current_setting('cnpg_trace_summaries.refresh_interval', true), -3) AS int) * 60
        WHEN current_setting('cnpg_trace_summaries.refresh_interval', true) ~ '^[0-9]+h$' THEN CAST(rtrim(current_setting('cnpg_trace_summaries.refresh_interval', true), 'h') AS int) * 3600
    END) THEN
            RAISE EXCEPTION 'building otel_trace_summaries took % s, longer than refresh_interval=%: the view could never be fresh',
                    round(CAST(took AS numeric), 1), current_setting('cnpg_trace_summaries.refresh_interval', true)
                USING HINT = 'A concurrent refresh takes longer than the build. Choose a longer refresh_interval, or -x summaries=incremental.';
        END IF;
        EXECUTE format($template$CREATE UNIQUE INDEX idx_trace_summaries_trace_id ON %1$I.otel_trace_summaries (trace_id)$template$, target);
        EXECUTE format($template$CREATE INDEX idx_trace_summaries_timestamp ON %1$I.otel_trace_summaries ("timestamp" DESC)$template$, target);
        EXECUTE format($template$CREATE INDEX idx_trace_summaries_service_timestamp ON %1$I.otel_trace_summaries (root_service_name, "timestamp" DESC)$template$, target);
        EXECUTE format($template$ANALYZE %1$I.otel_trace_summaries$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: record the install on otel_trace_summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format('COMMENT ON MATERIALIZED VIEW %I.%I IS %L', target, 'otel_trace_summaries',
            'One row per trace over the last 7 days of otel_traces (created by cnpg-trace-summaries). mode=view; refresh_interval=' || current_setting('cnpg_trace_summaries.refresh_interval', true)
            || '; installed_at=' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: create the metrics function otel_trace_summaries_metrics() */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_metrics() RETURNS TABLE (mode text, refresh_interval_seconds float8, stale_after_seconds float8, lag_seconds float8, newest_trace_age_seconds float8, newest_span_age_seconds float8, estimated_rows float8, populated float8, installed_age_seconds float8, last_refresh_age_seconds float8, last_refresh_duration_seconds float8, last_refresh_full float8, backlog_traces float8, capture_enabled float8, rebuild_pending float8, rebuild_pending_seconds float8, skipped_refreshes float8, refresh_lock_stuck float8, stale float8)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_column
DECLARE
    relation constant regclass := to_regclass(format('%%I.%%I', %1$L, 'otel_trace_summaries'));
    traces constant regclass := to_regclass(format('%%I.%%I', %1$L, 'otel_traces'));
    checked constant timestamptz := now();
    record_text text;
    newest_trace timestamptz;
    first_unseen timestamptz;
    newest_span timestamptz;
    installed timestamptz;
    state record;
    store text;
    holder jsonb;
BEGIN
    IF relation IS NULL THEN
        RETURN;
    END IF;
    record_text := obj_description(relation, 'pg_class');
    mode := substring(record_text from 'mode=([a-z_]+);');
    refresh_interval_seconds := (CASE
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+s$' THEN CAST(rtrim(substring(record_text from 'refresh_interval=([0-9a-z]+);'), 's') AS int)
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+min$' THEN CAST(left(substring(record_text from 'refresh_interval=([0-9a-z]+);'), -3) AS int) * 60
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+h$' THEN CAST(rtrim(substring(record_text from 'refresh_interval=([0-9a-z]+);'), 'h') AS int) * 3600
    END);
    stale_after_seconds := 2 * refresh_interval_seconds;
    installed := CAST(substring(record_text FROM 'installed_at=([0-9TZ:-]+)') AS timestamptz);
    installed_age_seconds := extract(epoch FROM checked - installed);
    populated := CASE WHEN (SELECT relispopulated FROM pg_class WHERE oid = relation) THEN 1 ELSE 0 END;
    IF populated = 1 THEN
        newest_trace := (SELECT max("timestamp") FROM %1$I.otel_trace_summaries);
    END IF;
    -- the first span the summaries do not show yet: written after their newest trace
    first_unseen := (SELECT min("timestamp") FROM %1$I.otel_traces
                     WHERE "timestamp" > coalesce(newest_trace, checked - interval '7 days')
                       AND "timestamp" <= checked AND trace_id <> '');
    newest_span := (SELECT max("timestamp") FROM %1$I.otel_traces
                    WHERE "timestamp" > checked - interval '7 days' AND "timestamp" <= checked
                      AND trace_id <> '');
    lag_seconds := greatest(coalesce(extract(epoch FROM checked - first_unseen), 0), 0);
    newest_trace_age_seconds := extract(epoch FROM checked - newest_trace);
    newest_span_age_seconds := extract(epoch FROM checked - newest_span);
    estimated_rows := (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = relation);
    holder := (SELECT jsonb_build_object(
            'pid', a.pid, 'user', a.usename, 'application_name', a.application_name, 'state', a.state,
            'since', coalesce(a.state_change, a.backend_start),
            'refreshing', coalesce(a.application_name = 'pg_cron'
                                   OR a.application_name LIKE 'cnpg-trace-summaries%%'
                                   OR (a.state = 'active' AND a.query LIKE '%%otel_trace_summaries%%'), false))
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = 7362002
          AND l.objid = CAST((CAST(hashtext(%1$L) AS bigint) + 4294967296) %% 4294967296 AS oid)
        LIMIT 1);
    refresh_lock_stuck := CASE WHEN holder IS NOT NULL AND NOT CAST(holder->>'refreshing' AS boolean)
                               THEN 1 ELSE 0 END;
    stale := CASE WHEN populated = 0 OR lag_seconds > stale_after_seconds OR refresh_lock_stuck = 1
                  THEN 1 ELSE 0 END;
    IF to_regclass(format('%%I.%%I', %1$L, 'otel_trace_summaries_state')) IS NOT NULL THEN
        store := %1$I.otel_trace_summaries_children(NULL, NULL)->>'store';
        SELECT * INTO state FROM %1$I.otel_trace_summaries_state;
        last_refresh_age_seconds := extract(epoch FROM checked - state.last_refresh_at);
        last_refresh_duration_seconds := state.last_refresh_seconds;
        last_refresh_full := CASE state.last_refresh_kind WHEN 'full' THEN 1 WHEN 'incremental' THEN 0 END;
        backlog_traces := (SELECT count(*) FROM (SELECT 1 FROM %1$I.otel_trace_summaries_dirty
                                                  LIMIT 10000) AS queued);
        capture_enabled := CASE WHEN CASE WHEN store = 'hypertable' THEN EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_insert' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_update' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_truncate' AND strpos('A', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_delete' AND strpos('OA', CAST(tgenabled AS text)) > 0)
             ELSE EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_insert' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_update' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_delete' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_truncate' AND strpos('A', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_insert' AND strpos('RA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_update' AND strpos('RA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_delete' AND strpos('RA', CAST(tgenabled AS text)) > 0) END THEN 1 ELSE 0 END;
        rebuild_pending := CASE WHEN state IS NULL OR state.window_boundary IS NULL
                                     OR state.rebuild_requested IS NOT NULL THEN 1 ELSE 0 END;
        rebuild_pending_seconds := CASE WHEN rebuild_pending = 1
            THEN extract(epoch FROM checked - coalesce(state.rebuild_requested_at, installed)) END;
        skipped_refreshes := state.skips_since_refresh;
        IF mode = 'incremental' AND (capture_enabled = 0
            OR coalesce(last_refresh_age_seconds > stale_after_seconds, installed_age_seconds > stale_after_seconds)
            OR rebuild_pending_seconds > stale_after_seconds) THEN
            stale := 1;
        END IF;
    END IF;
    RETURN NEXT;
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_metrics() FROM PUBLIC$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: grant pg_monitor EXECUTE on otel_trace_summaries_metrics() */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_monitor') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %I.otel_trace_summaries_metrics() TO pg_monitor', target);
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
    ),
    "incremental": (
        r"""/* cnpg-trace-summaries: create the table otel_trace_summaries (incremental mode) and its indexes */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format($template$CREATE TABLE %1$I.otel_trace_summaries WITH (
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
        -- times 0.000001, not divided by 1000000: the product is exact (6 decimals),
        -- so the cast rounds once, as (end - start) / 1e6 in Python does; a numeric
        -- division rounds to 16 digits first, and then the double can differ.
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            * 0.000001 AS double precision)
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
    FROM %1$I.otel_traces
    WHERE "timestamp" > (now() AT TIME ZONE 'UTC' - interval '7 days') AT TIME ZONE 'UTC' AND trace_id <> '' AND TRUE
    GROUP BY trace_id
) AS per_trace
WITH NO DATA$template$, target);
        EXECUTE format($template$ALTER TABLE %1$I.otel_trace_summaries ALTER COLUMN trace_id SET NOT NULL$template$, target);
        EXECUTE format($template$CREATE UNIQUE INDEX idx_trace_summaries_trace_id ON %1$I.otel_trace_summaries (trace_id)$template$, target);
        EXECUTE format($template$CREATE INDEX idx_trace_summaries_timestamp ON %1$I.otel_trace_summaries ("timestamp" DESC)$template$, target);
        EXECUTE format($template$CREATE INDEX idx_trace_summaries_service_timestamp ON %1$I.otel_trace_summaries (root_service_name, "timestamp" DESC)$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: record the install on otel_trace_summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format('COMMENT ON TABLE %I.%I IS %L', target, 'otel_trace_summaries',
            'One row per trace over the last 7 days of otel_traces (created by cnpg-trace-summaries). mode=incremental; refresh_interval=' || current_setting('cnpg_trace_summaries.refresh_interval', true)
            || '; installed_at=' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: create the incremental mode's tables and functions */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format($template$CREATE TABLE %1$I.otel_trace_summaries_dirty (trace_id text NOT NULL)
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000)$template$, target);
        EXECUTE format($template$COMMENT ON TABLE %1$I.otel_trace_summaries_dirty IS 'trace_ids whose summaries must be recomputed, appended by triggers on otel_traces and claimed by otel_trace_summaries_refresh() (created by cnpg-trace-summaries)'$template$, target);
        EXECUTE format($template$CREATE TABLE %1$I.otel_trace_summaries_state (
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
)$template$, target);
        EXECUTE format($template$INSERT INTO %1$I.otel_trace_summaries_state (rebuild_requested, rebuild_requested_at) VALUES ('installed', now())$template$, target);
        EXECUTE format($template$COMMENT ON TABLE %1$I.otel_trace_summaries_state IS 'the incremental refresh''s window boundary, the leaf relations of otel_traces it has seen, pending rebuild and last run (created by cnpg-trace-summaries); full_refresh_above: dirty keys above which a refresh rebuilds everything (NULL: a third of the summaries, at least 100000); rows_per_rebuild_range and spans_per_rebuild_slice: the size of a full rebuild''s transactions (NULL: 100000 and 1000000)'$template$, target);
        EXECUTE format($template$CREATE UNLOGGED TABLE %1$I.otel_trace_summaries_rebuild AS
SELECT trace_id, max("timestamp") AS last_span_at,
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
FROM %1$I.otel_traces GROUP BY trace_id
WITH NO DATA$template$, target);
        EXECUTE format($template$CREATE INDEX otel_trace_summaries_rebuild_trace_id ON %1$I.otel_trace_summaries_rebuild (trace_id)$template$, target);
        EXECUTE format($template$COMMENT ON TABLE %1$I.otel_trace_summaries_rebuild IS 'a full rebuild''s aggregates of the window, one row per trace and slice of time, written to otel_trace_summaries range by range; empty between rebuilds (created by cnpg-trace-summaries)'$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    boundary constant timestamptz := coalesce((SELECT window_boundary FROM %1$I.otel_trace_summaries_state), '-infinity');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO %1$I.otel_trace_summaries_dirty (trace_id)
        SELECT DISTINCT trace_id FROM captured_new WHERE "timestamp" > boundary AND trace_id <> '';
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO %1$I.otel_trace_summaries_dirty (trace_id)
        SELECT DISTINCT trace_id FROM captured_old WHERE "timestamp" > boundary AND trace_id <> '';
    ELSE
        INSERT INTO %1$I.otel_trace_summaries_dirty (trace_id)
        SELECT trace_id FROM captured_new WHERE "timestamp" > boundary AND trace_id <> ''
        UNION
        SELECT trace_id FROM captured_old WHERE "timestamp" > boundary AND trace_id <> '';
    END IF;
    RETURN NULL;
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_capture() FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_capture_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    boundary constant timestamptz := coalesce((SELECT window_boundary FROM %1$I.otel_trace_summaries_state), '-infinity');
BEGIN
    IF TG_OP <> 'DELETE' AND NEW."timestamp" > boundary AND NEW.trace_id <> '' THEN
        INSERT INTO %1$I.otel_trace_summaries_dirty (trace_id) VALUES (NEW.trace_id);
    END IF;
    IF TG_OP <> 'INSERT' AND OLD."timestamp" > boundary AND OLD.trace_id <> ''
       AND (TG_OP = 'DELETE' OR OLD.trace_id IS DISTINCT FROM NEW.trace_id
            OR NEW."timestamp" <= boundary) THEN
        INSERT INTO %1$I.otel_trace_summaries_dirty (trace_id) VALUES (OLD.trace_id);
    END IF;
    RETURN NULL;
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_capture_row() FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
BEGIN
    UPDATE %1$I.otel_trace_summaries_state
    SET rebuild_requested = 'otel_traces was truncated', rebuild_requested_at = clock_timestamp();
    RETURN NULL;
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_truncated() FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_children(previous jsonb, boundary timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    store constant oid := (SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                           WHERE n.nspname = %1$L AND c.relname = 'otel_traces');
    hypertable boolean := false;
    snapshot jsonb;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                'WHERE schema_name = $1 AND table_name = $2)'
            INTO hypertable USING %1$L, 'otel_traces';
    END IF;
    IF hypertable THEN
        EXECUTE 'SELECT coalesce(jsonb_object_agg(CAST(CAST(format(''%%I.%%I'', chunk_schema, chunk_name) AS regclass) AS oid), '
                'jsonb_build_object(''name'', format(''%%I.%%I'', chunk_schema, chunk_name), ''upper'', range_end)), ''{}'') '
                'FROM timescaledb_information.chunks WHERE hypertable_schema = $1 AND hypertable_name = $2'
            INTO snapshot USING %1$L, 'otel_traces';
    ELSE
        SELECT coalesce(jsonb_object_agg(CAST(leaf.relid AS oid), jsonb_build_object(
                   'name', CAST(leaf.relid AS text),
                   'upper', CASE WHEN key.partstrat = 'r' AND key.partnatts = 1 AND key.partattrs[0] = a.attnum
                                 THEN CAST(substring(pg_get_expr(c.relpartbound, c.oid)
                                                     FROM 'TO \(''([^'']*)''\)$') AS timestamptz) END)),
               '{}')
        INTO snapshot
        FROM pg_partition_tree(store) AS leaf
        JOIN pg_class AS c ON c.oid = leaf.relid
        LEFT JOIN pg_partitioned_table AS key ON key.partrelid = leaf.parentrelid
        LEFT JOIN pg_attribute AS a ON a.attrelid = leaf.parentrelid AND a.attname = 'timestamp'
        WHERE leaf.isleaf AND leaf.level > 0;
    END IF;
    IF previous IS NULL THEN
        RETURN jsonb_build_object('store', CASE WHEN hypertable THEN 'hypertable' ELSE 'plain' END,
                                  'snapshot', snapshot, 'added', '[]', 'detached', '[]', 'dropped', '[]');
    END IF;
    RETURN jsonb_build_object(
        'store', CASE WHEN hypertable THEN 'hypertable' ELSE 'plain' END,
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
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_children(jsonb, timestamptz) FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_apply_changes(previous timestamptz, new_boundary timestamptz) RETURNS jsonb
LANGUAGE plpgsql SET jit = off SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    n_claimed bigint;
    n_keys bigint;
    n_upserted bigint;
    n_deleted bigint;
BEGIN
    WITH claimed AS (
        DELETE FROM %1$I.otel_trace_summaries_dirty RETURNING trace_id
    ), crossing AS (
        SELECT trace_id FROM %1$I.otel_traces
        WHERE "timestamp" > previous AND "timestamp" <= new_boundary AND trace_id <> ''
    ), keys AS (
        SELECT trace_id FROM claimed UNION SELECT trace_id FROM crossing
    ), computed AS MATERIALIZED (
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
        -- times 0.000001, not divided by 1000000: the product is exact (6 decimals),
        -- so the cast rounds once, as (end - start) / 1e6 in Python does; a numeric
        -- division rounds to 16 digits first, and then the double can differ.
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            * 0.000001 AS double precision)
    END AS duration_ms,
    CAST(root[6] AS integer) AS status_code,
    root[7] AS status_message,
    service_set,
    span_count,
    error_count
FROM (
    SELECT one_trace.*
    FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT
            k.trace_id AS trace_id,
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
        FROM %1$I.otel_traces AS t
        WHERE t.trace_id = k.trace_id AND t."timestamp" > new_boundary
    ) AS one_trace
) AS per_trace
WHERE span_count > 0
    ), removed AS (
        DELETE FROM %1$I.otel_trace_summaries AS s USING keys AS k
        WHERE s.trace_id = k.trace_id
          AND NOT EXISTS (SELECT 1 FROM computed AS c WHERE c.trace_id = k.trace_id)
        RETURNING 1
    ), upserted AS (
        INSERT INTO %1$I.otel_trace_summaries AS s ("trace_id", "timestamp", "root_span_id", "root_span_name", "root_service_name", "root_span_kind", "start_time_unix_nano", "end_time_unix_nano", "duration_ms", "status_code", "status_message", "service_set", "span_count", "error_count")
        SELECT "trace_id", "timestamp", "root_span_id", "root_span_name", "root_service_name", "root_span_kind", "start_time_unix_nano", "end_time_unix_nano", "duration_ms", "status_code", "status_message", "service_set", "span_count", "error_count" FROM computed
        ON CONFLICT (trace_id) DO UPDATE SET "timestamp" = EXCLUDED."timestamp", "root_span_id" = EXCLUDED."root_span_id", "root_span_name" = EXCLUDED."root_span_name", "root_service_name" = EXCLUDED."root_service_name", "root_span_kind" = EXCLUDED."root_span_kind", "start_time_unix_nano" = EXCLUDED."start_time_unix_nano", "end_time_unix_nano" = EXCLUDED."end_time_unix_nano", "duration_ms" = EXCLUDED."duration_ms", "status_code" = EXCLUDED."status_code", "status_message" = EXCLUDED."status_message", "service_set" = EXCLUDED."service_set", "span_count" = EXCLUDED."span_count", "error_count" = EXCLUDED."error_count"
        WHERE (s."timestamp", s."root_span_id", s."root_span_name", s."root_service_name", s."root_span_kind", s."start_time_unix_nano", s."end_time_unix_nano", s."duration_ms", s."status_code", s."status_message", s."service_set", s."span_count", s."error_count") IS DISTINCT FROM (EXCLUDED."timestamp", EXCLUDED."root_span_id", EXCLUDED."root_span_name", EXCLUDED."root_service_name", EXCLUDED."root_span_kind", EXCLUDED."start_time_unix_nano", EXCLUDED."end_time_unix_nano", EXCLUDED."duration_ms", EXCLUDED."status_code", EXCLUDED."status_message", EXCLUDED."service_set", EXCLUDED."span_count", EXCLUDED."error_count")
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM keys),
           (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed)
    INTO n_claimed, n_keys, n_upserted, n_deleted;
    RETURN jsonb_build_object('kind', 'incremental', 'claimed', n_claimed, 'keys', n_keys,
                              'upserted', n_upserted, 'deleted', n_deleted);
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_apply_changes(timestamptz, timestamptz) FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_rebuild_slice(low timestamptz, spans_per_slice bigint) RETURNS jsonb
LANGUAGE plpgsql  SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    high constant timestamptz := (SELECT "timestamp" FROM %1$I.otel_traces WHERE "timestamp" > low
                                  ORDER BY "timestamp" OFFSET spans_per_slice - 1 LIMIT 1);
    n_traces bigint;
    n_spans bigint;
BEGIN
    WITH staged AS (
        INSERT INTO %1$I.otel_trace_summaries_rebuild
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
    FROM %1$I.otel_traces
    WHERE "timestamp" > low AND (high IS NULL OR "timestamp" <= high) AND trace_id <> ''
    GROUP BY trace_id
        RETURNING span_count
    )
    SELECT count(*), coalesce(sum(span_count), 0) INTO n_traces, n_spans FROM staged;
    RETURN jsonb_build_object('high', high, 'traces', n_traces, 'spans', n_spans);
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_rebuild_slice(timestamptz, bigint) FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_rebuild_range(target regclass, low text, rows_per_range bigint) RETURNS jsonb
LANGUAGE plpgsql  SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    high text := (SELECT trace_id FROM %1$I.otel_trace_summaries_rebuild WHERE low IS NULL OR trace_id >= low
                  ORDER BY trace_id OFFSET rows_per_range LIMIT 1);
    n_upserted bigint;
    n_deleted bigint;
BEGIN
    IF high IS NOT NULL AND high = low THEN  -- one trace fills the range: take it whole
        high := (SELECT min(trace_id) FROM %1$I.otel_trace_summaries_rebuild WHERE trace_id > low);
    END IF;
    EXECUTE format($range$
        WITH computed AS MATERIALIZED (
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
        -- times 0.000001, not divided by 1000000: the product is exact (6 decimals),
        -- so the cast rounds once, as (end - start) / 1e6 in Python does; a numeric
        -- division rounds to 16 digits first, and then the double can differ.
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            * 0.000001 AS double precision)
    END AS duration_ms,
    CAST(root[6] AS integer) AS status_code,
    root[7] AS status_message,
    service_set,
    span_count,
    error_count
FROM (
    SELECT
        p.trace_id,
        max(p.last_span_at) AS last_span_at,
        min(p.start_time_unix_nano) AS start_time_unix_nano,
        max(p.end_time_unix_nano) AS end_time_unix_nano,
        CASE WHEN count(*) = 1 THEN min(p.service_set)
             ELSE ARRAY(SELECT DISTINCT (s COLLATE "C") AS s
                        FROM %%2$s AS q CROSS JOIN LATERAL unnest(q.service_set) AS s
                        WHERE q.trace_id = p.trace_id ORDER BY s)
        END AS service_set,
        CAST(sum(p.span_count) AS bigint) AS span_count,
        CAST(sum(p.error_count) AS bigint) AS error_count,
        min(p.root) AS root
    FROM %%2$s AS p
    WHERE ($1 IS NULL OR p.trace_id >= $1) AND ($2 IS NULL OR p.trace_id < $2)
    GROUP BY p.trace_id
) AS per_trace
        ), removed AS (
            DELETE FROM %%1$s AS s
            WHERE ($1 IS NULL OR s.trace_id >= $1) AND ($2 IS NULL OR s.trace_id < $2)
              AND NOT EXISTS (SELECT 1 FROM %%2$s AS c WHERE c.trace_id = s.trace_id)
            RETURNING 1
        ), upserted AS (
            INSERT INTO %%1$s AS s ("trace_id", "timestamp", "root_span_id", "root_span_name", "root_service_name", "root_span_kind", "start_time_unix_nano", "end_time_unix_nano", "duration_ms", "status_code", "status_message", "service_set", "span_count", "error_count")
        SELECT "trace_id", "timestamp", "root_span_id", "root_span_name", "root_service_name", "root_span_kind", "start_time_unix_nano", "end_time_unix_nano", "duration_ms", "status_code", "status_message", "service_set", "span_count", "error_count" FROM computed
        ON CONFLICT (trace_id) DO UPDATE SET "timestamp" = EXCLUDED."timestamp", "root_span_id" = EXCLUDED."root_span_id", "root_span_name" = EXCLUDED."root_span_name", "root_service_name" = EXCLUDED."root_service_name", "root_span_kind" = EXCLUDED."root_span_kind", "start_time_unix_nano" = EXCLUDED."start_time_unix_nano", "end_time_unix_nano" = EXCLUDED."end_time_unix_nano", "duration_ms" = EXCLUDED."duration_ms", "status_code" = EXCLUDED."status_code", "status_message" = EXCLUDED."status_message", "service_set" = EXCLUDED."service_set", "span_count" = EXCLUDED."span_count", "error_count" = EXCLUDED."error_count"
        WHERE (s."timestamp", s."root_span_id", s."root_span_name", s."root_service_name", s."root_span_kind", s."start_time_unix_nano", s."end_time_unix_nano", s."duration_ms", s."status_code", s."status_message", s."service_set", s."span_count", s."error_count") IS DISTINCT FROM (EXCLUDED."timestamp", EXCLUDED."root_span_id", EXCLUDED."root_span_name", EXCLUDED."root_service_name", EXCLUDED."root_span_kind", EXCLUDED."start_time_unix_nano", EXCLUDED."end_time_unix_nano", EXCLUDED."duration_ms", EXCLUDED."status_code", EXCLUDED."status_message", EXCLUDED."service_set", EXCLUDED."span_count", EXCLUDED."error_count")
        RETURNING 1
        )
        SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed)$range$,
        target, CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_rebuild') AS regclass))
    INTO n_upserted, n_deleted USING low, high;
    RETURN jsonb_build_object('high', high, 'upserted', n_upserted, 'deleted', n_deleted);
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_rebuild_range(regclass, text, bigint) FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE PROCEDURE %1$I.otel_trace_summaries_rebuild(target regclass, reason text, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    started constant pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    state %1$I.otel_trace_summaries_state;
    boundary pg_catalog.timestamptz;
    children pg_catalog.jsonb;
    low_time pg_catalog.timestamptz;
    low_id pg_catalog.text;
    step pg_catalog.jsonb;
    slices pg_catalog.jsonb := '[]';
    ranges pg_catalog.jsonb := '[]';
    step_started pg_catalog.timestamptz;
BEGIN
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    IF NOT (has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_traces') AS regclass), 'SELECT') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries') AS regclass), 'SELECT, INSERT, UPDATE, DELETE') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_dirty') AS regclass), 'SELECT, INSERT, DELETE') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_state') AS regclass), 'SELECT, INSERT, UPDATE') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_rebuild') AS regclass), 'SELECT, INSERT, DELETE, TRUNCATE')) THEN
        RAISE EXCEPTION '%% may not refresh %%.otel_trace_summaries: it needs SELECT on otel_traces and write access to the summaries and their helper tables',
            current_user, quote_ident(%1$L)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Refresh as the role that installed the summaries (their owner).';
    END IF;
    PERFORM pg_advisory_xact_lock(7362002, hashtext(%1$L));
    -- otel_traces before the state row, as a TRUNCATE takes them
    LOCK TABLE ONLY %1$I.otel_traces IN ACCESS SHARE MODE;
    INSERT INTO %1$I.otel_trace_summaries_state DEFAULT VALUES ON CONFLICT DO NOTHING;
    SELECT * INTO state FROM %1$I.otel_trace_summaries_state FOR UPDATE;
    IF (state.rebuilding_pid IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_stat_activity AS a
            WHERE a.pid = state.rebuilding_pid AND a.pid <> pg_backend_pid()
              AND (a.query_start IS NULL
                   OR (a.state = 'active' AND a.query_start = state.rebuilding_since)))) THEN
        RAISE EXCEPTION 'a full rebuild of %%.otel_trace_summaries by pid %% is running (since %%)',
                quote_ident(%1$L), state.rebuilding_pid, state.rebuilding_since
            USING ERRCODE = 'lock_not_available', HINT = 'Try again when it is done.';
    END IF;
    boundary := greatest((now() AT TIME ZONE 'UTC' - interval '7 days') AT TIME ZONE 'UTC', state.window_boundary);
    children := %1$I.otel_trace_summaries_children(NULL, boundary)->'snapshot';
    DELETE FROM %1$I.otel_trace_summaries_dirty;
    TRUNCATE %1$I.otel_trace_summaries_rebuild;
    UPDATE %1$I.otel_trace_summaries_state
    SET window_boundary = boundary, children = children,
        rebuilding_pid = pg_backend_pid(), rebuilding_since = (SELECT query_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
        rebuild_requested = coalesce(rebuild_requested,
            format('a full rebuild started at %%s has not finished (%%s)', started, reason)),
        rebuild_requested_at = coalesce(rebuild_requested_at, started);
    COMMIT;
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    low_time := boundary;
    LOOP
        step_started := clock_timestamp();
        PERFORM pg_advisory_xact_lock(7362002, hashtext(%1$L));
        step := %1$I.otel_trace_summaries_rebuild_slice(low_time, coalesce(state.spans_per_rebuild_slice, 1000000));
        COMMIT;
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        slices := slices || jsonb_build_array(step || jsonb_build_object(
            'kind', 'slice', 'seconds', extract(epoch FROM clock_timestamp() - step_started)));
        EXIT WHEN step->>'high' IS NULL;
        low_time := CAST(step->>'high' AS timestamptz);
    END LOOP;
    low_id := NULL;
    LOOP
        step_started := clock_timestamp();
        PERFORM pg_advisory_xact_lock(7362002, hashtext(%1$L));
        step := %1$I.otel_trace_summaries_rebuild_range(target, low_id, coalesce(state.rows_per_rebuild_range, 100000));
        COMMIT;
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        ranges := ranges || jsonb_build_array(step || jsonb_build_object(
            'kind', 'range', 'seconds', extract(epoch FROM clock_timestamp() - step_started)));
        EXIT WHEN step->>'high' IS NULL;
        low_id := step->>'high';
    END LOOP;
    outcome := jsonb_build_object(
        'kind', 'full', 'reason', reason, 'boundary', boundary,
        'upserted', (SELECT coalesce(sum(CAST(s->>'upserted' AS bigint)), 0) FROM jsonb_array_elements(ranges) AS s), 'deleted', (SELECT coalesce(sum(CAST(s->>'deleted' AS bigint)), 0) FROM jsonb_array_elements(ranges) AS s),
        'spans', (SELECT coalesce(sum(CAST(s->>'spans' AS bigint)), 0) FROM jsonb_array_elements(slices) AS s),
        'slices', jsonb_array_length(slices), 'ranges', jsonb_array_length(ranges),
        'steps', slices || ranges);
    PERFORM pg_advisory_xact_lock(7362002, hashtext(%1$L));
    TRUNCATE %1$I.otel_trace_summaries_rebuild;
    UPDATE %1$I.otel_trace_summaries_state
    SET rebuild_requested = NULL, rebuild_requested_at = NULL, last_full_refresh_at = clock_timestamp(),
        last_refresh_at = clock_timestamp(), last_refresh_kind = 'full',
        last_refresh_seconds = extract(epoch FROM clock_timestamp() - started),
        last_refresh_keys = CAST(outcome->>'upserted' AS bigint),
        last_refresh_upserted = CAST(outcome->>'upserted' AS bigint),
        last_refresh_deleted = CAST(outcome->>'deleted' AS bigint),
        skips_since_refresh = 0
    WHERE rebuild_requested_at IS NULL OR rebuild_requested_at <= started;
    UPDATE %1$I.otel_trace_summaries_state SET rebuilding_pid = NULL, rebuilding_since = NULL
    WHERE rebuilding_pid = pg_backend_pid();
    COMMIT;
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    outcome := outcome || jsonb_build_object('seconds', extract(epoch FROM clock_timestamp() - started));
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON PROCEDURE %1$I.otel_trace_summaries_rebuild(regclass, text, jsonb) FROM PUBLIC$template$, target);
        EXECUTE format($template$CREATE PROCEDURE %1$I.otel_trace_summaries_refresh(full_rebuild boolean DEFAULT false, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_variable
DECLARE
    started constant pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    state %1$I.otel_trace_summaries_state;
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
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    IF NOT (has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_traces') AS regclass), 'SELECT') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries') AS regclass), 'SELECT, INSERT, UPDATE, DELETE') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_dirty') AS regclass), 'SELECT, INSERT, DELETE') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_state') AS regclass), 'SELECT, INSERT, UPDATE') AND has_table_privilege(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_rebuild') AS regclass), 'SELECT, INSERT, DELETE, TRUNCATE')) THEN
        RAISE EXCEPTION '%% may not refresh %%.otel_trace_summaries: it needs SELECT on otel_traces and write access to the summaries and their helper tables',
            current_user, quote_ident(%1$L)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Refresh as the role that installed the summaries (their owner).';
    END IF;
    IF NOT pg_try_advisory_xact_lock(7362002, hashtext(%1$L)) THEN
        holder := (SELECT jsonb_build_object(
            'pid', a.pid, 'user', a.usename, 'application_name', a.application_name, 'state', a.state,
            'since', coalesce(a.state_change, a.backend_start),
            'refreshing', coalesce(a.application_name = 'pg_cron'
                                   OR a.application_name LIKE 'cnpg-trace-summaries%%'
                                   OR (a.state = 'active' AND a.query LIKE '%%otel_trace_summaries%%'), false))
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = 7362002
          AND l.objid = CAST((CAST(hashtext(%1$L) AS bigint) + 4294967296) %% 4294967296 AS oid)
        LIMIT 1);
        IF holder IS NOT NULL AND NOT CAST(holder->>'refreshing' AS boolean) THEN
            RAISE EXCEPTION 'the refresh lock of %%.otel_trace_summaries is held by pid %% (user %%, application_name %%, %%), which is not refreshing',
                    quote_ident(%1$L), holder->>'pid', holder->>'user',
                    coalesce(nullif(holder->>'application_name', ''), 'none'),
                    coalesce(holder->>'state', 'state hidden') || ' since ' || coalesce(holder->>'since', '?')
                USING ERRCODE = 'lock_not_available',
                      HINT = format('No refresh can run until that session ends: SELECT pg_terminate_backend(%%s)', holder->>'pid');
        END IF;
        -- Another refresher runs: skip, never wait; recorded unless that refresher holds the row.
        UPDATE %1$I.otel_trace_summaries_state
        SET last_skip_at = clock_timestamp(), skips_since_refresh = skips_since_refresh + 1,
            last_skip_reason = format('another refresher (pid %%s) held the lock', holder->>'pid')
        WHERE ctid = (SELECT ctid FROM %1$I.otel_trace_summaries_state FOR UPDATE SKIP LOCKED);
        outcome := jsonb_build_object('refreshed', false, 'reason',
                                      format('another refresher (pid %%s) holds the lock', holder->>'pid'));
        RETURN;
    END IF;
    -- otel_traces before the state row, as a TRUNCATE takes them (see the TRUNCATE
    -- trigger's function); a TRUNCATE this waited for has committed, and the state row says so.
    LOCK TABLE ONLY %1$I.otel_traces IN ACCESS SHARE MODE;
    INSERT INTO %1$I.otel_trace_summaries_state DEFAULT VALUES ON CONFLICT DO NOTHING;
    SELECT * INTO state FROM %1$I.otel_trace_summaries_state FOR UPDATE;
    IF (state.rebuilding_pid IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_stat_activity AS a
            WHERE a.pid = state.rebuilding_pid AND a.pid <> pg_backend_pid()
              AND (a.query_start IS NULL
                   OR (a.state = 'active' AND a.query_start = state.rebuilding_since)))) THEN  -- a full rebuild runs, between two of its transactions
        UPDATE %1$I.otel_trace_summaries_state
        SET last_skip_at = clock_timestamp(), skips_since_refresh = skips_since_refresh + 1,
            last_skip_reason = format('a full rebuild (pid %%s) was running', state.rebuilding_pid);
        outcome := jsonb_build_object('refreshed', false, 'reason',
                                      format('a full rebuild (pid %%s) is running', state.rebuilding_pid));
        RETURN;
    END IF;
    boundary := greatest((now() AT TIME ZONE 'UTC' - interval '7 days') AT TIME ZONE 'UTC', state.window_boundary);
    changes := %1$I.otel_trace_summaries_children(state.children, state.window_boundary);
    summaries := (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries') AS regclass));
    limit_keys := coalesce(state.full_refresh_above, greatest(100000, summaries / 3));
    backlog := (SELECT count(*) FROM (SELECT 1 FROM %1$I.otel_trace_summaries_dirty LIMIT limit_keys + 1) AS queued);
    -- the dirty keys, plus about as many traces as the window moved past (NULL: no boundary yet)
    estimate := backlog + summaries * extract(epoch FROM boundary - state.window_boundary)
                                    / extract(epoch FROM interval '7 days');
    reason := CASE
        WHEN full_rebuild THEN 'asked for'
        WHEN state.rebuild_requested IS NOT NULL THEN state.rebuild_requested
        WHEN state.window_boundary IS NULL THEN 'no window boundary yet'
        WHEN jsonb_array_length(changes->'dropped') > 0
            THEN format('leaf relations of otel_traces with spans inside the window were dropped: %%s',
                        (SELECT string_agg(d, ', ') FROM jsonb_array_elements_text(changes->'dropped') AS d))
        WHEN estimate > limit_keys
            THEN format('a backlog of about %%s traces (full refresh above %%s)', round(estimate), limit_keys)
    END;
    IF reason IS NOT NULL THEN
        CALL %1$I.otel_trace_summaries_rebuild(CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries') AS regclass), reason, result);
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    ELSE
        -- the spans of a partition or chunk that joined or left otel_traces: their traces change
        FOR child IN SELECT c FROM jsonb_array_elements((changes->'added') || (changes->'detached')) AS c LOOP
            EXECUTE format('INSERT INTO %%s (trace_id) SELECT DISTINCT trace_id FROM ONLY %%s '
                           'WHERE "timestamp" > $1 AND trace_id <> $2',
                           CAST(format('%%I.%%I', %1$L, 'otel_trace_summaries_dirty') AS regclass), CAST(CAST(CAST(child AS text) AS oid) AS regclass))
                USING state.window_boundary, '';
        END LOOP;
        result := %1$I.otel_trace_summaries_apply_changes(state.window_boundary, boundary);
        UPDATE %1$I.otel_trace_summaries_state
        SET window_boundary = boundary, children = changes->'snapshot',
            last_refresh_at = clock_timestamp(), last_refresh_kind = 'incremental',
            last_refresh_seconds = extract(epoch FROM clock_timestamp() - started),
            last_refresh_keys = CAST(result->>'keys' AS bigint),
            last_refresh_upserted = CAST(result->>'upserted' AS bigint),
            last_refresh_deleted = CAST(result->>'deleted' AS bigint),
            skips_since_refresh = 0;
    END IF;
    IF changes->>'store' = 'hypertable' THEN
        FOR chunk IN
            SELECT CAST(e.key AS oid) FROM jsonb_each(changes->'snapshot') AS e
            WHERE CAST(e.value->>'upper' AS timestamptz) <= boundary
              AND EXISTS (SELECT 1 FROM pg_trigger
                          WHERE tgrelid = CAST(e.key AS oid) AND tgname = 'otel_trace_summaries_capture_row_delete')
        LOOP
            BEGIN
                EXECUTE format('LOCK TABLE %%s IN ACCESS EXCLUSIVE MODE NOWAIT', CAST(chunk AS regclass));
                EXECUTE format('DROP TRIGGER %%I ON %%s', 'otel_trace_summaries_capture_row_delete', CAST(chunk AS regclass));
            EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN
                NULL;
            END;
        END LOOP;
    END IF;
    outcome := result || jsonb_build_object('refreshed', true, 'boundary', boundary,
                                            'seconds', extract(epoch FROM clock_timestamp() - started));
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON PROCEDURE %1$I.otel_trace_summaries_refresh(boolean, jsonb) FROM PUBLIC$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: create the capture triggers on otel_traces */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        hypertable pg_catalog.bool := false;
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                    'WHERE schema_name = $1 AND table_name = $2)'
                INTO hypertable USING target, 'otel_traces';
        END IF;
        IF hypertable THEN
            IF CAST(string_to_array(split_part((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), '-', 1), '.') AS int[])
                   < ARRAY[2, 18] THEN
                RAISE EXCEPTION 'the incremental mode needs TimescaleDB 2.18 or later on a hypertable; this database has TimescaleDB %', (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')
                    USING HINT = 'ALTER EXTENSION timescaledb UPDATE, or install the view mode (-x summaries=view)';
            END IF;
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_insert AFTER INSERT ON %1$I.otel_traces REFERENCING NEW TABLE AS captured_new FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_update AFTER UPDATE ON %1$I.otel_traces REFERENCING OLD TABLE AS captured_old NEW TABLE AS captured_new FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_truncate AFTER TRUNCATE ON %1$I.otel_traces FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_truncated()$template$, target);
            EXECUTE format($template$ALTER TABLE %1$I.otel_traces ENABLE ALWAYS TRIGGER otel_trace_summaries_capture_truncate$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_row_delete AFTER DELETE ON %1$I.otel_traces FOR EACH ROW EXECUTE FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
        ELSE
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_insert AFTER INSERT ON %1$I.otel_traces REFERENCING NEW TABLE AS captured_new FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_update AFTER UPDATE ON %1$I.otel_traces REFERENCING OLD TABLE AS captured_old NEW TABLE AS captured_new FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_delete AFTER DELETE ON %1$I.otel_traces REFERENCING OLD TABLE AS captured_old FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_truncate AFTER TRUNCATE ON %1$I.otel_traces FOR EACH STATEMENT EXECUTE FUNCTION %1$I.otel_trace_summaries_truncated()$template$, target);
            EXECUTE format($template$ALTER TABLE %1$I.otel_traces ENABLE ALWAYS TRIGGER otel_trace_summaries_capture_truncate$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_row_insert AFTER INSERT ON %1$I.otel_traces FOR EACH ROW EXECUTE FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
            EXECUTE format($template$ALTER TABLE %1$I.otel_traces ENABLE REPLICA TRIGGER otel_trace_summaries_capture_row_insert$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_row_update AFTER UPDATE ON %1$I.otel_traces FOR EACH ROW EXECUTE FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
            EXECUTE format($template$ALTER TABLE %1$I.otel_traces ENABLE REPLICA TRIGGER otel_trace_summaries_capture_row_update$template$, target);
            EXECUTE format($template$CREATE TRIGGER otel_trace_summaries_capture_row_delete AFTER DELETE ON %1$I.otel_traces FOR EACH ROW EXECUTE FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
            EXECUTE format($template$ALTER TABLE %1$I.otel_traces ENABLE REPLICA TRIGGER otel_trace_summaries_capture_row_delete$template$, target);
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: create the metrics function otel_trace_summaries_metrics() */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_metrics() RETURNS TABLE (mode text, refresh_interval_seconds float8, stale_after_seconds float8, lag_seconds float8, newest_trace_age_seconds float8, newest_span_age_seconds float8, estimated_rows float8, populated float8, installed_age_seconds float8, last_refresh_age_seconds float8, last_refresh_duration_seconds float8, last_refresh_full float8, backlog_traces float8, capture_enabled float8, rebuild_pending float8, rebuild_pending_seconds float8, skipped_refreshes float8, refresh_lock_stuck float8, stale float8)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_column
DECLARE
    relation constant regclass := to_regclass(format('%%I.%%I', %1$L, 'otel_trace_summaries'));
    traces constant regclass := to_regclass(format('%%I.%%I', %1$L, 'otel_traces'));
    checked constant timestamptz := now();
    record_text text;
    newest_trace timestamptz;
    first_unseen timestamptz;
    newest_span timestamptz;
    installed timestamptz;
    state record;
    store text;
    holder jsonb;
BEGIN
    IF relation IS NULL THEN
        RETURN;
    END IF;
    record_text := obj_description(relation, 'pg_class');
    mode := substring(record_text from 'mode=([a-z_]+);');
    refresh_interval_seconds := (CASE
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+s$' THEN CAST(rtrim(substring(record_text from 'refresh_interval=([0-9a-z]+);'), 's') AS int)
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+min$' THEN CAST(left(substring(record_text from 'refresh_interval=([0-9a-z]+);'), -3) AS int) * 60
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+h$' THEN CAST(rtrim(substring(record_text from 'refresh_interval=([0-9a-z]+);'), 'h') AS int) * 3600
    END);
    stale_after_seconds := 2 * refresh_interval_seconds;
    installed := CAST(substring(record_text FROM 'installed_at=([0-9TZ:-]+)') AS timestamptz);
    installed_age_seconds := extract(epoch FROM checked - installed);
    populated := CASE WHEN (SELECT relispopulated FROM pg_class WHERE oid = relation) THEN 1 ELSE 0 END;
    IF populated = 1 THEN
        newest_trace := (SELECT max("timestamp") FROM %1$I.otel_trace_summaries);
    END IF;
    -- the first span the summaries do not show yet: written after their newest trace
    first_unseen := (SELECT min("timestamp") FROM %1$I.otel_traces
                     WHERE "timestamp" > coalesce(newest_trace, checked - interval '7 days')
                       AND "timestamp" <= checked AND trace_id <> '');
    newest_span := (SELECT max("timestamp") FROM %1$I.otel_traces
                    WHERE "timestamp" > checked - interval '7 days' AND "timestamp" <= checked
                      AND trace_id <> '');
    lag_seconds := greatest(coalesce(extract(epoch FROM checked - first_unseen), 0), 0);
    newest_trace_age_seconds := extract(epoch FROM checked - newest_trace);
    newest_span_age_seconds := extract(epoch FROM checked - newest_span);
    estimated_rows := (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = relation);
    holder := (SELECT jsonb_build_object(
            'pid', a.pid, 'user', a.usename, 'application_name', a.application_name, 'state', a.state,
            'since', coalesce(a.state_change, a.backend_start),
            'refreshing', coalesce(a.application_name = 'pg_cron'
                                   OR a.application_name LIKE 'cnpg-trace-summaries%%'
                                   OR (a.state = 'active' AND a.query LIKE '%%otel_trace_summaries%%'), false))
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = 7362002
          AND l.objid = CAST((CAST(hashtext(%1$L) AS bigint) + 4294967296) %% 4294967296 AS oid)
        LIMIT 1);
    refresh_lock_stuck := CASE WHEN holder IS NOT NULL AND NOT CAST(holder->>'refreshing' AS boolean)
                               THEN 1 ELSE 0 END;
    stale := CASE WHEN populated = 0 OR lag_seconds > stale_after_seconds OR refresh_lock_stuck = 1
                  THEN 1 ELSE 0 END;
    IF to_regclass(format('%%I.%%I', %1$L, 'otel_trace_summaries_state')) IS NOT NULL THEN
        store := %1$I.otel_trace_summaries_children(NULL, NULL)->>'store';
        SELECT * INTO state FROM %1$I.otel_trace_summaries_state;
        last_refresh_age_seconds := extract(epoch FROM checked - state.last_refresh_at);
        last_refresh_duration_seconds := state.last_refresh_seconds;
        last_refresh_full := CASE state.last_refresh_kind WHEN 'full' THEN 1 WHEN 'incremental' THEN 0 END;
        backlog_traces := (SELECT count(*) FROM (SELECT 1 FROM %1$I.otel_trace_summaries_dirty
                                                  LIMIT 10000) AS queued);
        capture_enabled := CASE WHEN CASE WHEN store = 'hypertable' THEN EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_insert' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_update' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_truncate' AND strpos('A', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_delete' AND strpos('OA', CAST(tgenabled AS text)) > 0)
             ELSE EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_insert' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_update' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_delete' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_truncate' AND strpos('A', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_insert' AND strpos('RA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_update' AND strpos('RA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_delete' AND strpos('RA', CAST(tgenabled AS text)) > 0) END THEN 1 ELSE 0 END;
        rebuild_pending := CASE WHEN state IS NULL OR state.window_boundary IS NULL
                                     OR state.rebuild_requested IS NOT NULL THEN 1 ELSE 0 END;
        rebuild_pending_seconds := CASE WHEN rebuild_pending = 1
            THEN extract(epoch FROM checked - coalesce(state.rebuild_requested_at, installed)) END;
        skipped_refreshes := state.skips_since_refresh;
        IF mode = 'incremental' AND (capture_enabled = 0
            OR coalesce(last_refresh_age_seconds > stale_after_seconds, installed_age_seconds > stale_after_seconds)
            OR rebuild_pending_seconds > stale_after_seconds) THEN
            stale := 1;
        END IF;
    END IF;
    RETURN NEXT;
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_metrics() FROM PUBLIC$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
        r"""/* cnpg-trace-summaries: grant pg_monitor EXECUTE on otel_trace_summaries_metrics() */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_monitor') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %I.otel_trace_summaries_metrics() TO pg_monitor', target);
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
    ),
}

BUILD = {
    "view": None,
    "incremental": r"""/* cnpg-trace-summaries: fill otel_trace_summaries (a full rebuild, committed range by range) */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        outcome pg_catalog.jsonb;
    BEGIN
        IF NOT to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL THEN
            EXIT work;  -- another mode is installed (and kept)
        END IF;
        PERFORM set_config('search_path', quote_ident(target), true);
        CALL otel_trace_summaries_refresh(false, outcome);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$""",
}

GRANT_READER = r"""/* cnpg-trace-summaries: grant the reader role SELECT on otel_trace_summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.reader_role', true), '') <> '' THEN
            EXECUTE format('GRANT SELECT ON %I.otel_trace_summaries TO %I', target, current_setting('cnpg_trace_summaries.reader_role', true));
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$"""

SCHEDULE_HERE = r"""/* cnpg-trace-summaries: schedule the refresh job where pg_cron lives in this database */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        comment constant pg_catalog.text := obj_description(
            to_regclass(format('%I.%I', target, 'otel_trace_summaries')), 'pg_class');
        mode constant pg_catalog.text := substring(comment from 'mode=([a-z_]+);');
        refresh_interval constant pg_catalog.text := substring(comment from 'refresh_interval=([0-9a-z]+);');
        job_name constant pg_catalog.text := (SELECT CASE
    WHEN octet_length(job.readable) <= 63 AND strpos(current_database(), '.') = 0
         AND strpos(current_database() || target, '~') = 0 THEN job.readable
    ELSE (SELECT left(job.readable, n) FROM generate_series(least(char_length(job.readable), 52), 0, -1) AS n
          WHERE octet_length(left(job.readable, n)) <= 52 LIMIT 1)
         || '~' || left(md5(quote_ident(current_database()) || '.' || quote_ident(target)), 10)
    END
FROM (SELECT 'otel_trace_summaries:' || current_database() || '.' || target AS readable) AS job);
        refresh constant pg_catalog.text := (CASE mode WHEN 'view' THEN format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.otel_trace_summaries', target) WHEN 'incremental' THEN format('CALL %I.otel_trace_summaries_refresh(false, CAST(NULL AS pg_catalog.jsonb))', target) END);
        schedule constant pg_catalog.text := (CASE refresh_interval
        WHEN '1s' THEN '1 seconds'
        WHEN '2s' THEN '2 seconds'
        WHEN '3s' THEN '3 seconds'
        WHEN '4s' THEN '4 seconds'
        WHEN '5s' THEN '5 seconds'
        WHEN '6s' THEN '6 seconds'
        WHEN '7s' THEN '7 seconds'
        WHEN '8s' THEN '8 seconds'
        WHEN '9s' THEN '9 seconds'
        WHEN '10s' THEN '10 seconds'
        WHEN '11s' THEN '11 seconds'
        WHEN '12s' THEN '12 seconds'
        WHEN '13s' THEN '13 seconds'
        WHEN '14s' THEN '14 seconds'
        WHEN '15s' THEN '15 seconds'
        WHEN '16s' THEN '16 seconds'
        WHEN '17s' THEN '17 seconds'
        WHEN '18s' THEN '18 seconds'
        WHEN '19s' THEN '19 seconds'
        WHEN '20s' THEN '20 seconds'
        WHEN '21s' THEN '21 seconds'
        WHEN '22s' THEN '22 seconds'
        WHEN '23s' THEN '23 seconds'
        WHEN '24s' THEN '24 seconds'
        WHEN '25s' THEN '25 seconds'
        WHEN '26s' THEN '26 seconds'
        WHEN '27s' THEN '27 seconds'
        WHEN '28s' THEN '28 seconds'
        WHEN '29s' THEN '29 seconds'
        WHEN '30s' THEN '30 seconds'
        WHEN '31s' THEN '31 seconds'
        WHEN '32s' THEN '32 seconds'
        WHEN '33s' THEN '33 seconds'
        WHEN '34s' THEN '34 seconds'
        WHEN '35s' THEN '35 seconds'
        WHEN '36s' THEN '36 seconds'
        WHEN '37s' THEN '37 seconds'
        WHEN '38s' THEN '38 seconds'
        WHEN '39s' THEN '39 seconds'
        WHEN '40s' THEN '40 seconds'
        WHEN '41s' THEN '41 seconds'
        WHEN '42s' THEN '42 seconds'
        WHEN '43s' THEN '43 seconds'
        WHEN '44s' THEN '44 seconds'
        WHEN '45s' THEN '45 seconds'
        WHEN '46s' THEN '46 seconds'
        WHEN '47s' THEN '47 seconds'
        WHEN '48s' THEN '48 seconds'
        WHEN '49s' THEN '49 seconds'
        WHEN '50s' THEN '50 seconds'
        WHEN '51s' THEN '51 seconds'
        WHEN '52s' THEN '52 seconds'
        WHEN '53s' THEN '53 seconds'
        WHEN '54s' THEN '54 seconds'
        WHEN '55s' THEN '55 seconds'
        WHEN '56s' THEN '56 seconds'
        WHEN '57s' THEN '57 seconds'
        WHEN '58s' THEN '58 seconds'
        WHEN '59s' THEN '59 seconds'
        WHEN '1min' THEN '* * * * *'
        WHEN '2min' THEN '*/2 * * * *'
        WHEN '3min' THEN '*/3 * * * *'
        WHEN '4min' THEN '*/4 * * * *'
        WHEN '5min' THEN '*/5 * * * *'
        WHEN '6min' THEN '*/6 * * * *'
        WHEN '10min' THEN '*/10 * * * *'
        WHEN '12min' THEN '*/12 * * * *'
        WHEN '15min' THEN '*/15 * * * *'
        WHEN '20min' THEN '*/20 * * * *'
        WHEN '30min' THEN '*/30 * * * *'
        WHEN '1h' THEN '0 * * * *'
        WHEN '2h' THEN '0 */2 * * *'
        WHEN '3h' THEN '0 */3 * * *'
        WHEN '4h' THEN '0 */4 * * *'
        WHEN '6h' THEN '0 */6 * * *'
        WHEN '8h' THEN '0 */8 * * *'
        WHEN '12h' THEN '0 */12 * * *'
    END);
        require_refresh constant pg_catalog.bool := coalesce(current_setting('cnpg_trace_summaries.require_refresh', true), '') = 'yes';
        -- pg_settings hides pg_cron's settings from roles that may not read them: NULL then.
        cron_database constant pg_catalog.text := coalesce(
            (SELECT setting FROM pg_settings WHERE name = 'cron.database_name'),
            nullif(current_setting('cnpg_trace_summaries.cron_database', true), ''));
        background_workers constant pg_catalog.text := (SELECT setting FROM pg_settings
                                                        WHERE name = 'cron.use_background_workers');
        cron_host constant pg_catalog.text := (SELECT setting FROM pg_settings WHERE name = 'cron.host');
        reads_settings constant pg_catalog.bool := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
            OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE');
        has_extension pg_catalog.bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
        schedule_there pg_catalog.text;
        manual pg_catalog.text;
        problem pg_catalog.text;
    BEGIN
        IF refresh IS NULL OR schedule IS NULL THEN
            RAISE EXCEPTION 'otel_trace_summaries in schema % has no record of its mode and interval', target
                USING HINT = 'Run trace-summaries repair.';
        END IF;
        schedule_there := format('SELECT cron.schedule_in_database(%L, %L, %L, %L, username => %L)',
                                 job_name, schedule, refresh, current_database(), current_user);
        manual := 'automatic refresh of otel_trace_summaries is OFF and manual refresh is required: '
            'run "' || refresh || '" every ' || refresh_interval
            || ' (or "trace-summaries refresh --every ' || refresh_interval || '")';
        IF NOT has_extension AND cron_database = current_database()
           AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS pg_cron;
                has_extension := true;
                RAISE NOTICE 'created extension pg_cron in database %', current_database();
            EXCEPTION WHEN insufficient_privilege THEN
                problem := format('pg_cron is preloaded but %s may not create it (%s): ask an administrator '
                    'to run "CREATE EXTENSION pg_cron" in database %s, then upgrade again',
                    current_user, SQLERRM, current_database());
            END;
        END IF;

        IF has_extension AND refresh_interval ~ 's$'
           AND NOT (SELECT CAST(string_to_array(substring(extversion FROM '^[0-9]+(?:[.][0-9]+)*'), '.') AS int[]) >= ARRAY[1, 5] FROM pg_extension WHERE extname = 'pg_cron') THEN
            RAISE EXCEPTION 'pg_cron % in database % schedules whole minutes only: refresh_interval=% needs pg_cron 1.5 or later; the nearest it takes is 1min',
                (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'), current_database(), refresh_interval;
        END IF;

        IF has_extension THEN
            BEGIN
                PERFORM cron.schedule(job_name, schedule, refresh);
                RAISE NOTICE 'pg_cron job "%" scheduled: % every % (%)', job_name, refresh, refresh_interval, schedule;
                IF background_workers = 'off' THEN
                    RAISE NOTICE 'cron.use_background_workers is off: pg_cron jobs connect over libpq to cron.host (%) '
                        'as %, which needs a matching pg_hba.conf rule or a password file for the server user; '
                        'with cron.use_background_workers = on they need neither',
                        coalesce(cron_host, 'localhost'), current_user USING ERRCODE = '01000';
                END IF;
                EXIT work;
            EXCEPTION WHEN insufficient_privilege THEN
                problem := format('pg_cron is installed but %s may not schedule jobs (%s): ask an administrator '
                    'to run "GRANT USAGE ON SCHEMA cron TO %s", then upgrade again',
                    current_user, SQLERRM, quote_ident(current_user));
            END;
        END IF;

        IF problem IS NULL THEN
            IF cron_database IS NOT NULL AND cron_database <> current_database() THEN
                problem := format('pg_cron lives in database %s, not in %s: an online upgrade schedules the job '
                    'there; a script (--sql) needs this run in database %s: %s',
                    cron_database, current_database(), cron_database, schedule_there);
            ELSIF cron_database IS NULL AND NOT reads_settings THEN
                problem := format('pg_cron is not installed in database %s as far as %s can tell (pg_cron''s '
                    'settings are hidden from it: GRANT pg_read_all_settings TO %s lets the migration tell, '
                    'and -x cron_database=NAME names the database pg_cron lives in). If the server preloads '
                    'pg_cron, an administrator can run "CREATE EXTENSION pg_cron" here when this is its '
                    'cron.database_name, or else run in that database (postgres by default): %s',
                    current_database(), current_user, quote_ident(current_user), schedule_there);
            ELSE
                problem := format('pg_cron is not installed in database %s', current_database());
            END IF;
        END IF;
        IF require_refresh THEN
            RAISE EXCEPTION 'no pg_cron job will refresh otel_trace_summaries (require_refresh=yes): %', problem
                USING HINT = 'Fix what the message says and upgrade again, or upgrade without '
                             '-x require_refresh=yes and refresh another way (trace-summaries refresh --every).';
        END IF;
        RAISE NOTICE '%: %', problem, manual USING ERRCODE = '01000';
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$"""

JOB = r"""
SELECT (SELECT CASE
    WHEN octet_length(job.readable) <= 63 AND strpos(current_database(), '.') = 0
         AND strpos(current_database() || @schema_literal@, '~') = 0 THEN job.readable
    ELSE (SELECT left(job.readable, n) FROM generate_series(least(char_length(job.readable), 52), 0, -1) AS n
          WHERE octet_length(left(job.readable, n)) <= 52 LIMIT 1)
         || '~' || left(md5(quote_ident(current_database()) || '.' || quote_ident(@schema_literal@)), 10)
    END
FROM (SELECT 'otel_trace_summaries:' || current_database() || '.' || @schema_literal@ AS readable) AS job) AS job_name,
       (CASE substring(record.comment from 'mode=([a-z_]+);') WHEN 'view' THEN format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.otel_trace_summaries', @schema_literal@) WHEN 'incremental' THEN format('CALL %I.otel_trace_summaries_refresh(false, CAST(NULL AS pg_catalog.jsonb))', @schema_literal@) END) AS command,
       (CASE substring(record.comment from 'refresh_interval=([0-9a-z]+);')
        WHEN '1s' THEN '1 seconds'
        WHEN '2s' THEN '2 seconds'
        WHEN '3s' THEN '3 seconds'
        WHEN '4s' THEN '4 seconds'
        WHEN '5s' THEN '5 seconds'
        WHEN '6s' THEN '6 seconds'
        WHEN '7s' THEN '7 seconds'
        WHEN '8s' THEN '8 seconds'
        WHEN '9s' THEN '9 seconds'
        WHEN '10s' THEN '10 seconds'
        WHEN '11s' THEN '11 seconds'
        WHEN '12s' THEN '12 seconds'
        WHEN '13s' THEN '13 seconds'
        WHEN '14s' THEN '14 seconds'
        WHEN '15s' THEN '15 seconds'
        WHEN '16s' THEN '16 seconds'
        WHEN '17s' THEN '17 seconds'
        WHEN '18s' THEN '18 seconds'
        WHEN '19s' THEN '19 seconds'
        WHEN '20s' THEN '20 seconds'
        WHEN '21s' THEN '21 seconds'
        WHEN '22s' THEN '22 seconds'
        WHEN '23s' THEN '23 seconds'
        WHEN '24s' THEN '24 seconds'
        WHEN '25s' THEN '25 seconds'
        WHEN '26s' THEN '26 seconds'
        WHEN '27s' THEN '27 seconds'
        WHEN '28s' THEN '28 seconds'
        WHEN '29s' THEN '29 seconds'
        WHEN '30s' THEN '30 seconds'
        WHEN '31s' THEN '31 seconds'
        WHEN '32s' THEN '32 seconds'
        WHEN '33s' THEN '33 seconds'
        WHEN '34s' THEN '34 seconds'
        WHEN '35s' THEN '35 seconds'
        WHEN '36s' THEN '36 seconds'
        WHEN '37s' THEN '37 seconds'
        WHEN '38s' THEN '38 seconds'
        WHEN '39s' THEN '39 seconds'
        WHEN '40s' THEN '40 seconds'
        WHEN '41s' THEN '41 seconds'
        WHEN '42s' THEN '42 seconds'
        WHEN '43s' THEN '43 seconds'
        WHEN '44s' THEN '44 seconds'
        WHEN '45s' THEN '45 seconds'
        WHEN '46s' THEN '46 seconds'
        WHEN '47s' THEN '47 seconds'
        WHEN '48s' THEN '48 seconds'
        WHEN '49s' THEN '49 seconds'
        WHEN '50s' THEN '50 seconds'
        WHEN '51s' THEN '51 seconds'
        WHEN '52s' THEN '52 seconds'
        WHEN '53s' THEN '53 seconds'
        WHEN '54s' THEN '54 seconds'
        WHEN '55s' THEN '55 seconds'
        WHEN '56s' THEN '56 seconds'
        WHEN '57s' THEN '57 seconds'
        WHEN '58s' THEN '58 seconds'
        WHEN '59s' THEN '59 seconds'
        WHEN '1min' THEN '* * * * *'
        WHEN '2min' THEN '*/2 * * * *'
        WHEN '3min' THEN '*/3 * * * *'
        WHEN '4min' THEN '*/4 * * * *'
        WHEN '5min' THEN '*/5 * * * *'
        WHEN '6min' THEN '*/6 * * * *'
        WHEN '10min' THEN '*/10 * * * *'
        WHEN '12min' THEN '*/12 * * * *'
        WHEN '15min' THEN '*/15 * * * *'
        WHEN '20min' THEN '*/20 * * * *'
        WHEN '30min' THEN '*/30 * * * *'
        WHEN '1h' THEN '0 * * * *'
        WHEN '2h' THEN '0 */2 * * *'
        WHEN '3h' THEN '0 */3 * * *'
        WHEN '4h' THEN '0 */4 * * *'
        WHEN '6h' THEN '0 */6 * * *'
        WHEN '8h' THEN '0 */8 * * *'
        WHEN '12h' THEN '0 */12 * * *'
    END) AS schedule,
       substring(record.comment from 'refresh_interval=([0-9a-z]+);') AS refresh_interval,
       current_database() AS database
FROM (SELECT obj_description(c.oid, 'pg_class') AS comment
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
      WHERE n.nspname = @schema_literal@ AND c.relname = 'otel_trace_summaries') AS record
"""

UNINSTALL = r"""/* cnpg-trace-summaries: remove otel_trace_summaries and everything of its mode */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        PERFORM pg_advisory_xact_lock(7362002, hashtext(target));
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' THEN
            EXECUTE format($template$LOCK TABLE %1$I.otel_trace_summaries IN ACCESS EXCLUSIVE MODE$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'r' THEN
            EXECUTE format($template$LOCK TABLE %1$I.otel_trace_summaries_next IN ACCESS EXCLUSIVE MODE$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries_next$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_delete ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_update ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_insert ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_truncate' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_truncate ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_delete ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_update ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_insert ON %1$I.otel_traces$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL THEN
            EXECUTE format($template$DROP PROCEDURE %1$I.otel_trace_summaries_refresh(boolean, jsonb)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL THEN
            EXECUTE format($template$DROP PROCEDURE %1$I.otel_trace_summaries_rebuild(regclass, text, jsonb)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_rebuild_range(regclass, text, bigint)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_rebuild_slice(timestamptz, bigint)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_apply_changes(timestamptz, timestamptz)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_children(jsonb, timestamptz)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_truncated()$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_rebuild$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_state$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_dirty$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries_next$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'r' THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_next$template$, target);
        END IF;
        EXECUTE format($template$DROP FUNCTION IF EXISTS %1$I.otel_trace_summaries_metrics()$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$"""

UNSCHEDULE_HERE = r"""/* cnpg-trace-summaries: unschedule the refresh job where pg_cron lives in this database */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        job_name constant pg_catalog.text := (SELECT CASE
    WHEN octet_length(job.readable) <= 63 AND strpos(current_database(), '.') = 0
         AND strpos(current_database() || target, '~') = 0 THEN job.readable
    ELSE (SELECT left(job.readable, n) FROM generate_series(least(char_length(job.readable), 52), 0, -1) AS n
          WHERE octet_length(left(job.readable, n)) <= 52 LIMIT 1)
         || '~' || left(md5(quote_ident(current_database()) || '.' || quote_ident(target)), 10)
    END
FROM (SELECT 'otel_trace_summaries:' || current_database() || '.' || target AS readable) AS job);
        job_id pg_catalog.int8;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
            IF coalesce(current_setting('cnpg_trace_summaries.offline', true), '') = 'yes' THEN
                RAISE NOTICE 'where pg_cron lives in another database (cron.database_name, postgres by default), '
                    'run there: SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = % AND database = %',
                    quote_literal(job_name), quote_literal(current_database());
            END IF;
            EXIT work;
        END IF;
        IF NOT has_schema_privilege('cron', 'USAGE') THEN
            EXIT work;  -- this role could not have scheduled a job: there is none of its own
        END IF;
        FOR job_id IN SELECT jobid FROM cron.job WHERE jobname = job_name LOOP
            PERFORM cron.unschedule(job_id);
            RAISE NOTICE 'pg_cron job "%" unscheduled', job_name;
        END LOOP;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$"""
# -- end of the frozen SQL --
