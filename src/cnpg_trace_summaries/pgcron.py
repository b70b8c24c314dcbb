"""pg_cron: where it lives, and the job that refreshes the summaries.

pg_cron's extension exists in one database of a server, ``cron.database_name``
(``postgres`` by default, in pg_cron and in CloudNativePG). From there
``cron.schedule_in_database`` runs a job in any other database. Its settings
are hidden from roles without ``pg_read_all_settings``, such as CNPG's
``app``, so :func:`locate` looks in this order:

1. the extension in this database;
2. ``-x cron_database`` / ``TRACE_SUMMARIES_CRON_DATABASE``;
3. ``cron.database_name``, where this role may read it;
4. where it may not: the ``postgres`` database, reached with the same credentials.

Where pg_cron lives in this database the job is scheduled by a DO block
(:func:`schedule_here_sql`), inside the migration's transaction, and
``--sql`` scripts make the same decisions on the server. Where it lives in
another database the job is scheduled over a second connection
(:func:`schedule_elsewhere`), which commits on its own, so the migration does
that last, after every step that can fail.

The job name, the schedule and the command come from :mod:`.contract`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg import conninfo, sql

from cnpg_trace_summaries.contract import (
    DEFAULT_CRON_DATABASE,
    FALLBACK_REFRESHER,
    REFRESH_EVERY,
    REFRESH_SCHEDULE,
    job_name_sql,
    refresh_command,
)

log = logging.getLogger(__name__)

FACTS_SQL = f"""
SELECT current_database() AS database,
       current_user AS role,
       {job_name_sql()} AS job_name,
       {refresh_command("current_schema()", "view")} AS view_command,
       {refresh_command("current_schema()", "incremental")} AS incremental_command,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS extension_here,
       (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') AS reads_settings
"""

GRANTS_FOR_SCHEDULE_IN_DATABASE = (
    "GRANT USAGE ON SCHEMA cron TO {role}; "
    "GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text, text, text, text, text, boolean) "
    "TO {role}"
)


class CronError(Exception):
    """The job could not be scheduled or unscheduled; the message says what to run instead."""


@dataclass(frozen=True)
class Location:
    """Where pg_cron's extension is (or is to be created), as far as this role can tell."""

    database: str | None  # None: no pg_cron found
    here: bool  # it is (or is to be) this database
    how: str  # how it was found, or why it was not
    facts: dict


def facts(conn: psycopg.Connection) -> dict:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(FACTS_SQL).fetchone()


def connect_to(conn: psycopg.Connection, database: str, **kwargs) -> psycopg.Connection:
    """A new connection to ``database`` on the same server, with the same credentials."""
    params = conninfo.conninfo_to_dict(conn.info.dsn)
    params.update(dbname=database, password=conn.info.password)
    params = {key: value for key, value in params.items() if value is not None}
    return psycopg.connect(conninfo.make_conninfo(**params), **kwargs)


def extension_in(conn: psycopg.Connection, database: str) -> bool | str:
    """True when pg_cron's extension is in ``database``; else why not, in words."""
    try:
        with connect_to(conn, database, connect_timeout=10) as other:
            found = other.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    except psycopg.Error as error:
        return f"could not connect to database {database}: {' '.join(str(error).split())}"
    return True if found else f"database {database} has no pg_cron extension"


def locate(conn: psycopg.Connection, explicit: str = "") -> Location:
    """Where pg_cron lives, looking as the module docstring says."""
    found = facts(conn)
    here = found["database"]
    if found["extension_here"]:
        return Location(here, True, "the pg_cron extension is in this database", found)
    if explicit:
        return Location(explicit, explicit == here, "given by -x cron_database", found)
    if found["cron_database"]:
        return Location(found["cron_database"], found["cron_database"] == here,
                        "cron.database_name", found)  # fmt: skip
    if found["reads_settings"]:
        return Location(None, False, "pg_cron is not loaded on this server", found)
    if here == DEFAULT_CRON_DATABASE:
        return Location(None, False, "pg_cron's settings are hidden from this role", found)
    tried = extension_in(conn, DEFAULT_CRON_DATABASE)
    if tried is True:
        return Location(DEFAULT_CRON_DATABASE, False,
                        f"pg_cron's default database, {DEFAULT_CRON_DATABASE}", found)  # fmt: skip
    return Location(
        None, False, f"pg_cron's settings are hidden from this role, and {tried}", found
    )


def elsewhere(location: Location | None) -> bool:
    return location is not None and location.database is not None and not location.here


def schedule_statement(job_name: str, refresh: str, database: str, username: str = "") -> str:
    """cron.schedule_in_database(...); with ``username``, as an administrator runs it for that role
    (so that the job is the role's own, which its downgrade can remove)."""
    call = sql.SQL("SELECT cron.schedule_in_database({}, {}, {}, {}").format(
        job_name, REFRESH_SCHEDULE, refresh, database
    )
    if username:
        call += sql.SQL(", username => {}").format(username)
    return (call + sql.SQL(")")).as_string(None)


def schedule_elsewhere(conn: psycopg.Connection, location: Location, mode: str) -> str:
    """Schedule the job from the database pg_cron lives in; return the NOTICE-like line.

    Raises :class:`CronError` with the statement and the GRANTs an
    administrator needs when this role may not.
    """
    job_name, database = location.facts["job_name"], location.facts["database"]
    refresh = location.facts[f"{mode}_command"]
    try:
        with connect_to(conn, location.database, autocommit=True) as cron:
            cron.execute(schedule_statement(job_name, refresh, database))
    except psycopg.Error as error:
        role = location.facts["role"]
        raise CronError(
            f"could not schedule the refresh in database {location.database}, where pg_cron lives "
            f"({location.how}): {' '.join(str(error).split())}. Ask an administrator to run "
            f"there: {schedule_statement(job_name, refresh, database, role)}; or to grant what "
            f"it takes: {GRANTS_FOR_SCHEDULE_IN_DATABASE.format(role=quote_ident(role))}"
        ) from None
    return (
        f'pg_cron job "{job_name}" scheduled in database {location.database} '
        f"({location.how}): {refresh} {REFRESH_EVERY} ({REFRESH_SCHEDULE})"
    )


def unschedule_elsewhere(conn: psycopg.Connection, location: Location) -> str | None:
    """Remove this schema's job from the database pg_cron lives in; None when there was none."""
    job_name, database = location.facts["job_name"], location.facts["database"]
    try:
        with connect_to(conn, location.database, autocommit=True) as cron:
            removed = cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s AND database = %s",
                (job_name, database),
            ).fetchall()
    except psycopg.Error as error:
        raise CronError(
            f'could not unschedule pg_cron job "{job_name}" in database {location.database} '
            f"({' '.join(str(error).split())}); nothing was changed. Ask an administrator to run "
            f"there: SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = "
            f"{sql.Literal(job_name).as_string(None)}"
        ) from None
    if not removed:
        return None
    return f'pg_cron job "{job_name}" unscheduled in database {location.database}'


def not_found_warning(location: Location) -> str | None:
    """For a downgrade that found no pg_cron where a job may still be: what to run, and where.

    Only where pg_cron's settings are hidden from this role: elsewhere, "not
    found" means there is no pg_cron, so no job.
    """
    if location.database is not None or location.facts["reads_settings"]:
        return None
    facts = location.facts
    return (
        f"pg_cron was not found ({location.how}): if a refresh job was scheduled for this "
        "database in another one, remove it there: SELECT cron.unschedule(jobid) FROM cron.job "
        f"WHERE jobname = {sql.Literal(facts['job_name']).as_string(None)} AND database = "
        f"{sql.Literal(facts['database']).as_string(None)} (or downgrade with -x cron_database=NAME)"
    )


def quote_ident(name: str) -> str:
    """A role name as PostgreSQL's quote_ident() writes it: quoted only where it must be."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return sql.Identifier(name).as_string(None)


def _literal(value: str | None) -> str:
    return "NULL" if value is None else sql.Literal(value).as_string(None)


def schedule_here_sql(mode: str, *, require_refresh: bool, cron_database: str | None) -> str:
    """A DO block that schedules the job where pg_cron lives in this database, or says why not.

    Every way it ends without a job raises a NOTICE with SQLSTATE 01000
    (logged at WARNING) saying that manual refresh is required, and what to
    run; with ``require_refresh`` it raises an error instead.
    """
    return f"""
DO $schedule$
DECLARE
    job_name constant text := {job_name_sql()};
    refresh constant text := {refresh_command("current_schema()", mode)};
    require_refresh constant boolean := {"true" if require_refresh else "false"};
    -- As an administrator runs it for this role, so that the job is this role's own.
    schedule_there constant text := format(
        'SELECT cron.schedule_in_database(%L, %L, %L, %L, username => %L)',
        job_name, '{REFRESH_SCHEDULE}', refresh, current_database(), current_user);
    manual constant text := 'automatic refresh of otel_trace_summaries is OFF and manual refresh is required: '
        'run "' || refresh || '" {REFRESH_EVERY} (or "{FALLBACK_REFRESHER}")';
    -- pg_settings hides pg_cron's settings from roles that may not read them: NULL then.
    cron_database constant text := coalesce(
        (SELECT setting FROM pg_settings WHERE name = 'cron.database_name'), {_literal(cron_database)});
    background_workers constant text := (SELECT setting FROM pg_settings WHERE name = 'cron.use_background_workers');
    cron_host constant text := (SELECT setting FROM pg_settings WHERE name = 'cron.host');
    reads_settings constant boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
        OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE');
    has_extension boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
    problem text;
BEGIN
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

    IF has_extension THEN
        BEGIN
            PERFORM cron.schedule(job_name, '{REFRESH_SCHEDULE}', refresh);
            RAISE NOTICE 'pg_cron job "%" scheduled: % {REFRESH_EVERY} ({REFRESH_SCHEDULE})', job_name, refresh;
            IF background_workers = 'off' THEN
                RAISE NOTICE 'cron.use_background_workers is off: pg_cron jobs connect over libpq to cron.host (%) '
                    'as %, which needs a matching pg_hba.conf rule or a password file for the server user; '
                    'with cron.use_background_workers = on they need neither',
                    coalesce(cron_host, 'localhost'), current_user USING ERRCODE = '01000';
            END IF;
            RETURN;
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
                         '-x require_refresh=yes and refresh another way ({FALLBACK_REFRESHER}).';
    END IF;
    RAISE NOTICE '%: %', problem, manual USING ERRCODE = '01000';
END
$schedule$
"""


def unschedule_here_sql(*, offline: bool) -> str:
    """A DO block that removes this schema's job where pg_cron lives in this database.

    It raises on failure, so that a downgrade never ends with the job gone and
    the summaries kept, or the reverse. In a ``--sql`` script it also names
    the statement to run where pg_cron lives in another database.
    """
    return f"""
DO $unschedule$
DECLARE
    job_name constant text := {job_name_sql()};
    job record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        IF {"true" if offline else "false"} THEN
            RAISE NOTICE 'where pg_cron lives in another database (cron.database_name, postgres by default), '
                'run there: SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = % AND database = %',
                quote_literal(job_name), quote_literal(current_database());
        END IF;
        RETURN;
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE') THEN
        RETURN;  -- this role could not have scheduled a job: there is none of its own
    END IF;
    FOR job IN SELECT jobid FROM cron.job WHERE jobname = job_name LOOP
        PERFORM cron.unschedule(job.jobid);
        RAISE NOTICE 'pg_cron job "%" unscheduled', job_name;
    END LOOP;
END
$unschedule$
"""
