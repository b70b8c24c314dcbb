"""The pg_cron job: its schedule, and the DO blocks that schedule and unschedule it here.

The job runs the command of the mode the summaries' record names, at the
record's interval (:mod:`.common`), so that whatever installed or changed the
summaries (an upgrade, ``trace-summaries switch``, ``trace-summaries
schedule``) and whatever re-creates a lost job schedule the same thing.
Values the caller chooses (``require_refresh``, ``cron_database``,
``offline``) are read from settings (:func:`.render.value`).
"""

from __future__ import annotations

import re

from cnpg_trace_summaries.contract import SUMMARIES, job_name_sql
from cnpg_trace_summaries.sql import incremental, view
from cnpg_trace_summaries.sql.common import (
    RECORDED_INTERVAL_SQL,
    RECORDED_MODE_SQL,
    schedule_sql,
)
from cnpg_trace_summaries.sql.render import SCHEMA_LITERAL, do_block, value

# Each mode's job command, over a schema expression.
COMMANDS = {"view": view.JOB_COMMAND, "incremental": incremental.JOB_COMMAND}


def command_sql(mode_sql: str, schema_sql: str) -> str:
    """SQL: the job command of the mode ``mode_sql`` names, in schema ``schema_sql``."""
    whens = " ".join(
        f"WHEN '{mode}' THEN {command.format(schema=schema_sql)}"
        for mode, command in COMMANDS.items()
    )
    return f"(CASE {mode_sql} {whens} END)"


# pg_cron takes schedules in seconds ('10 seconds') from this release on.
PG_CRON_SECONDS_SINCE = (1, 5)

# Whether an installed pg_cron (its extversion, like 1.4-1 or 1.6) takes schedules in seconds.
TAKES_SECONDS = (
    "CAST(string_to_array(substring({version} FROM '^[0-9]+(?:[.][0-9]+)*'), '.') AS int[])"
    f" >= ARRAY[{PG_CRON_SECONDS_SINCE[0]}, {PG_CRON_SECONDS_SINCE[1]}]"
)


def takes_seconds(version: str) -> bool:
    """:data:`TAKES_SECONDS` in Python, for a version read elsewhere (an extversion like 1.4-1,
    or a release like 1.6.7)."""
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2]) >= PG_CRON_SECONDS_SINCE


# The record of the summaries in schema `target` (in a do_block), and what it implies.
_DECLARE_JOB = f"""
        comment constant pg_catalog.text := obj_description(
            to_regclass(format('%I.%I', target, '{SUMMARIES}')), 'pg_class');
        mode constant pg_catalog.text := {RECORDED_MODE_SQL.format(comment="comment")};
        refresh_interval constant pg_catalog.text := {RECORDED_INTERVAL_SQL.format(comment="comment")};
        job_name constant pg_catalog.text := {job_name_sql("current_database()", "target")};
        refresh constant pg_catalog.text := {command_sql("mode", "target")};
        schedule constant pg_catalog.text := {schedule_sql("refresh_interval")};"""

# Schedules the job where pg_cron lives in this database, or says why not. Every way
# it ends without a job raises a NOTICE with SQLSTATE 01000 (logged at WARNING)
# saying that manual refresh is required, and what to run; with require_refresh an
# error instead.
SCHEDULE_HERE = do_block(
    purpose="schedule the refresh job where pg_cron lives in this database",
    plpgsql=f"""        IF refresh IS NULL OR schedule IS NULL THEN
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
           AND NOT (SELECT {TAKES_SECONDS.format(version="extversion")} FROM pg_extension WHERE extname = 'pg_cron') THEN
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
        RAISE NOTICE '%: %', problem, manual USING ERRCODE = '01000';""",
    declare=_DECLARE_JOB
    + f"""
        require_refresh constant pg_catalog.bool := coalesce({value("require_refresh")}, '') = 'yes';
        -- pg_settings hides pg_cron's settings from roles that may not read them: NULL then.
        cron_database constant pg_catalog.text := coalesce(
            (SELECT setting FROM pg_settings WHERE name = 'cron.database_name'),
            nullif({value("cron_database")}, ''));
        background_workers constant pg_catalog.text := (SELECT setting FROM pg_settings
                                                        WHERE name = 'cron.use_background_workers');
        cron_host constant pg_catalog.text := (SELECT setting FROM pg_settings WHERE name = 'cron.host');
        reads_settings constant pg_catalog.bool := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
            OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE');
        has_extension pg_catalog.bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
        schedule_there pg_catalog.text;
        manual pg_catalog.text;
        problem pg_catalog.text;""",
)

# Removes this schema's job where pg_cron lives in this database. It raises on
# failure, so that a downgrade never ends with the job gone and the summaries kept,
# or the reverse. In a --sql script (value offline = yes) it also names the
# statement to run where pg_cron lives in another database.
UNSCHEDULE_HERE = do_block(
    purpose="unschedule the refresh job where pg_cron lives in this database",
    plpgsql=f"""        IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
            IF coalesce({value("offline")}, '') = 'yes' THEN
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
        END LOOP;""",
    declare=f"""
        job_name constant pg_catalog.text := {job_name_sql("current_database()", "target")};
        job_id pg_catalog.int8;""",
)

# The job the summaries of one schema need, from their record (for_schema): what an
# online upgrade schedules where pg_cron lives in another database.
JOB = f"""
SELECT {job_name_sql("current_database()", SCHEMA_LITERAL)} AS job_name,
       {command_sql(RECORDED_MODE_SQL.format(comment="record.comment"), SCHEMA_LITERAL)} AS command,
       {schedule_sql(RECORDED_INTERVAL_SQL.format(comment="record.comment"))} AS schedule,
       {RECORDED_INTERVAL_SQL.format(comment="record.comment")} AS refresh_interval,
       current_database() AS database
FROM (SELECT obj_description(c.oid, 'pg_class') AS comment
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
      WHERE n.nspname = {SCHEMA_LITERAL} AND c.relname = '{SUMMARIES}') AS record
"""
