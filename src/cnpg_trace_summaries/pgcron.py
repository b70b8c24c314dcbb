"""pg_cron: where it lives, and scheduling the job that refreshes the summaries there.

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
(:data:`.sql.cron.SCHEDULE_HERE`), inside the migration's transaction, and
``--sql`` scripts make the same decisions on the server. Where it lives in
another database the job is scheduled over a second connection
(:func:`schedule_elsewhere`), which commits on its own, so the migration does
that last, after every step that can fail.

What the job runs and how often comes from the summaries' record
(:data:`.sql.cron.JOB`); the job's name from :mod:`.contract`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import conninfo, sql
from psycopg.rows import dict_row

from cnpg_trace_summaries.contract import DEFAULT_CRON_DATABASE, job_name_sql
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql import cron as cron_sql
from cnpg_trace_summaries.sql.render import PINNED_PATH, SCHEMA_LITERAL, set_values

log = logging.getLogger(__name__)

LOCATE_SQL = f"""
SELECT current_database() AS database,
       current_user AS role,
       quote_ident(current_user) AS role_ident,
       {job_name_sql("current_database()", SCHEMA_LITERAL)} AS job_name,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS extension_here,
       (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') AS reads_settings
"""

VERSION_SQL = f"""
SELECT extversion, {cron_sql.TAKES_SECONDS.format(version="extversion")}
FROM pg_extension WHERE extname = 'pg_cron'
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


@dataclass(frozen=True)
class Job:
    """The job the summaries' record asks for."""

    job_name: str
    command: str | None  # None: no record
    schedule: str | None
    refresh_interval: str | None
    database: str


def connect_to(conn: psycopg.Connection, database: str, **kwargs) -> psycopg.Connection:
    """A new connection to ``database`` on the same server, with the same credentials,
    its path pinned."""
    params = conninfo.conninfo_to_dict(conn.info.dsn)
    params.update(
        dbname=database,
        password=conn.info.password,
        options=f"-csearch_path={PINNED_PATH.replace(' ', '')}",
    )
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


def locate(place: Place, explicit: str = "") -> Location:
    """Where pg_cron lives, looking as the module docstring says."""
    found = place.conn.cursor(row_factory=dict_row).execute(place.sql(LOCATE_SQL)).fetchone()
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
    tried = extension_in(place.conn, DEFAULT_CRON_DATABASE)
    if tried is True:
        return Location(DEFAULT_CRON_DATABASE, False,
                        f"pg_cron's default database, {DEFAULT_CRON_DATABASE}", found)  # fmt: skip
    return Location(
        None, False, f"pg_cron's settings are hidden from this role, and {tried}", found
    )


def elsewhere(location: Location | None) -> bool:
    return location is not None and location.database is not None and not location.here


def job(place: Place, job_sql: str = cron_sql.JOB) -> Job:
    """The job the summaries' record asks for (``job_sql``: a revision's frozen query)."""
    row = place.conn.cursor(row_factory=dict_row).execute(place.sql(job_sql)).fetchone()
    if row is None:  # no summaries: only the name is known
        name = place.one(f"SELECT {job_name_sql('current_database()', SCHEMA_LITERAL)}")
        return Job(name, None, None, None, place.one("SELECT current_database()"))
    return Job(**row)


def version(place: Place, location: Location) -> tuple[str, bool] | None:
    """pg_cron's version where it lives, and whether it takes schedules in seconds."""
    if location.database is None:
        return None
    if location.here:
        return place.conn.execute(VERSION_SQL).fetchone()
    try:
        with connect_to(place.conn, location.database, connect_timeout=10) as cron:
            return cron.execute(VERSION_SQL).fetchone()
    except psycopg.Error:
        return None


def interval_refused(place: Place, location: Location | None, interval) -> str | None:
    """Why pg_cron where it lives cannot run the job at ``interval`` (an Interval), or None."""
    if location is None or not interval.in_seconds:
        return None
    found = version(place, location)
    if found is None or found[1]:
        return None
    return (
        f"pg_cron {found[0]} in database {location.database} schedules whole minutes only: "
        f"refresh_interval={interval.text} needs pg_cron 1.5 or later; the nearest it takes is 1min"
    )


def schedule_statement(job: Job, username: str = "") -> str:
    """cron.schedule_in_database(...); with ``username``, as an administrator runs it for that role
    (so that the job is the role's own, which its downgrade can remove)."""
    call = sql.SQL("SELECT cron.schedule_in_database({}, {}, {}, {}").format(
        job.job_name, job.schedule, job.command, job.database
    )
    if username:
        call += sql.SQL(", username => {}").format(username)
    return (call + sql.SQL(")")).as_string(None)


def schedule_elsewhere(place: Place, location: Location, job: Job) -> str:
    """Schedule ``job`` from the database pg_cron lives in; return the NOTICE-like line.

    Raises :class:`CronError` with the statement and the GRANTs an
    administrator needs when this role may not.
    """
    if job.command is None:
        raise CronError(
            "otel_trace_summaries has no record of its mode: run trace-summaries repair"
        )
    try:
        with connect_to(place.conn, location.database, autocommit=True) as cron:
            cron.execute(schedule_statement(job))
    except psycopg.Error as error:
        facts = location.facts
        raise CronError(
            f"could not schedule the refresh in database {location.database}, where pg_cron lives "
            f"({location.how}): {' '.join(str(error).split())}. Ask an administrator to run "
            f"there: {schedule_statement(job, facts['role'])}; or to grant what it takes: "
            f"{GRANTS_FOR_SCHEDULE_IN_DATABASE.format(role=facts['role_ident'])}"
        ) from None
    return (
        f'pg_cron job "{job.job_name}" scheduled in database {location.database} '
        f"({location.how}): {job.command} every {job.refresh_interval} ({job.schedule})"
    )


def unschedule_elsewhere(place: Place, location: Location) -> str | None:
    """Remove this schema's job from the database pg_cron lives in; None when there was none."""
    job_name, database = location.facts["job_name"], location.facts["database"]
    try:
        with connect_to(place.conn, location.database, autocommit=True) as cron:
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


# -- reading the job back ------------------------------------------------------------------
JOB_SQL = """
SELECT jobid, jobname, schedule, command, database, username, active
FROM cron.job WHERE jobname = %s AND database = %s
"""

LAST_RUN_SQL = """
SELECT status, return_message, start_time, end_time
FROM cron.job_run_details
WHERE jobid = %s AND status IN ('succeeded', 'failed')
ORDER BY runid DESC
LIMIT 1
"""

LAST_SUCCESS_SQL = """
SELECT end_time FROM cron.job_run_details
WHERE jobid = %s AND status = 'succeeded'
ORDER BY runid DESC
LIMIT 1
"""


@dataclass(frozen=True)
class ScheduledJob:
    jobid: int
    jobname: str
    schedule: str
    command: str
    database: str
    username: str
    active: bool


@dataclass(frozen=True)
class LastRun:
    status: str
    message: str
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None or self.started_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Found:
    """This schema's job where pg_cron lives, as far as this role can read it."""

    location: Location
    readable: bool  # pg_cron's tables could be read
    note: str  # how pg_cron was found, or why its jobs could not be read
    job: ScheduledJob | None = None
    last_run: LastRun | None = None
    last_success_at: datetime | None = None

    @property
    def missing(self) -> bool:
        """pg_cron is there and readable, and the job is not."""
        return self.readable and self.job is None


@contextlib.contextmanager
def cron_connection(place: Place, location: Location) -> Iterator[psycopg.Connection]:
    if location.here:
        yield place.conn
        return
    with connect_to(place.conn, location.database, autocommit=True) as cron:
        yield cron


def find_job(place: Place, location: Location) -> Found:
    """This schema's refresh job, its last run and last success, where pg_cron lives."""
    if location.database is None:
        return Found(location, False, location.how)
    name, database = location.facts["job_name"], location.facts["database"]
    try:
        with cron_connection(place, location) as cron:
            if cron.execute("SELECT to_regclass('cron.job')").fetchone()[0] is None:
                return Found(location, False, "pg_cron's extension is not created")
            row = cron.execute(JOB_SQL, (name, database)).fetchone()
            if row is None:
                return Found(location, True, location.how)
            job = ScheduledJob(*row)
            last = cron.execute(LAST_RUN_SQL, (job.jobid,)).fetchone()
            success = cron.execute(LAST_SUCCESS_SQL, (job.jobid,)).fetchone()
    except psycopg.Error as error:
        if location.here:
            place.conn.rollback()
        return Found(location, False, f"cannot read pg_cron's jobs: {' '.join(str(error).split())}")
    return Found(
        location,
        True,
        location.how,
        job,
        LastRun(*last) if last else None,
        success[0] if success else None,
    )


def job_present(place: Place, location: Location) -> bool | None:
    """Whether this schema's job is where pg_cron lives; None when that cannot be read."""
    found = find_job(place, location)
    return None if not found.readable else found.job is not None


def schedule(place: Place, location: Location, cron_database: str = "") -> str:
    """(Re)create this schema's job as the summaries' record says, where pg_cron lives.

    Returns the line to show; raises :class:`CronError` with what to run instead.
    """
    if elsewhere(location):
        return schedule_elsewhere(place, location, job(place))
    notices: list[str] = []

    def keep(diagnostic) -> None:
        notices.append(diagnostic.message_primary or "")

    values = {"require_refresh": "no", "cron_database": cron_database}
    place.conn.add_notice_handler(keep)
    try:
        with place.conn.transaction():
            place.conn.execute(set_values(values, "%({})s"), values)
            place.execute(cron_sql.SCHEDULE_HERE)
    finally:
        place.conn.remove_notice_handler(keep)
    done = [line for line in notices if line.startswith("pg_cron job")]
    if not done:
        raise CronError(notices[-1] if notices else "pg_cron could not schedule the job")
    return done[0]
