"""pg_cron the way clusters really run it: every shape ends in a job that runs, or a NOTICE.

Each shape is a real cluster. The module prepares every shape first (and the
failover drill up to the promotion), then the tests wait for pg_cron's next
tick together: one wait, at most two minutes, for every job here. conftest
schedules this module first, so that the wait overlaps the rest of the suite.

| shape | cluster |
|---|---|
| 1 extension created in this database (view and incremental mode) | cron_server |
| 2 preloaded, this is cron.database_name, no extension yet | bare (CNPG auth) |
| 3 pg_cron in another database, a role that reads its settings | elsewhere (CNPG auth) |
| 3' CNPG's default: pg_cron in postgres, `app` cannot read its settings | cnpg (CNPG auth) |
| 3'' pg_cron in a database only -x cron_database names | custom (CNPG auth) |
| 4 not preloaded | tests/test_spec_scenarios.py |
| 5 extension there, role may not use schema cron | tests/test_least_privilege.py |
| 6 CNPG auth with background workers off: libpq to cron.host fails | libpq (CNPG auth) |
| failover: a hot standby promoted; its pg_cron takes the job over | primary, standby |
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial

import psycopg
import pytest

from cnpg_trace_summaries.contract import DEFAULT_CRON_DATABASE
from cnpg_trace_summaries.dev import servers
from tests.support.commands import run_cli
from tests.support.cron import app_database, first_run_after, hurry, job_id
from tests.support.data import LISTING_DATA_SQL
from tests.support.database import Database, schema_in
from tests.support.processes import wait_for
from tests.support.revisions import FIRST
from tests.support.roles import ROLE_PASSWORD, grant, login_role
from tests.support.servers import PASSWORD, TEST_DATABASE_URL, data_directory, local_server

pytestmark = [
    pytest.mark.pg_cron_tick,
    pytest.mark.skipif(
        bool(TEST_DATABASE_URL), reason="the pg_cron shapes need clusters the tests configure"
    ),
]


@dataclass
class Shape:
    database: Database
    cron_server: object
    cron_database: str
    notices: str
    jobid: int | None = None
    prepared_at: object = None
    extra: dict = field(default_factory=dict)

    def cron_connect(self) -> psycopg.Connection:
        return self.cron_server.connect(self.cron_database)

    def first_run(self) -> dict:
        assert self.jobid is not None, self.notices
        return first_run_after(self.cron_connect, self.jobid, self.prepared_at)

    def shows(self, trace_id: str) -> bool:
        return bool(
            self.database.scalar(
                "SELECT count(*) FROM otel_trace_summaries WHERE trace_id = %s", (trace_id,)
            )
        )


def migrate(database: Database, cron_server, cron_database: str, x: dict | None = None) -> Shape:
    """Revision 1, a span, head; then a span that only a refresh after the migration shows."""
    database.migrate("upgrade", FIRST)
    database.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'before', 'root', 'GET /before')"
    )
    notices = database.migrate("upgrade", "head", x=x)
    database.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'after', 'root', 'GET /after')"
    )
    shape = Shape(database, cron_server, cron_database, notices)
    with cron_server.connect(cron_database) as conn:
        if conn.execute("SELECT to_regclass('cron.job')").fetchone()[0]:
            shape.jobid = job_id(shape.cron_connect, database.job_name)
            if shape.jobid is not None:
                hurry(shape.cron_connect, shape.jobid)
        # After the span: a run that starts later sees it (one that started between the
        # two once showed no span, on a tick that fell just there).
        shape.prepared_at = conn.execute("SELECT now()").fetchone()[0]
    return shape


def owned_schema(stack: ExitStack, server, dbname: str, *, read_settings: bool) -> Database:
    """A schema owned by a new non-superuser role, reached as that role."""
    role = stack.enter_context(login_role(server, databases=(dbname,)))
    if read_settings:
        grant(server, dbname, "GRANT pg_read_all_settings TO {}", role)
    return stack.enter_context(schema_in(server, dbname, role, ROLE_PASSWORD))


@dataclass
class Failover:
    """The drill up to the promotion; the job's run after it is awaited with the others."""

    standby: Database
    jobid: int
    promoted_at: object
    reads: int
    refreshes: int
    errors: list[str]


def wait_for_replay(primary: Database, standby: Database) -> None:
    lsn = primary.scalar("SELECT pg_current_wal_lsn()")
    wait_for(
        standby,
        "SELECT 1 WHERE pg_last_wal_replay_lsn() >= %s::pg_lsn",
        (str(lsn),),
        what="the standby to catch up",
        seconds=60,
    )


def drill(stack: ExitStack, install: servers.Installation) -> Failover:
    primary_server = stack.enter_context(local_server("primary", install, pg_cron_database="app"))
    standby_server = primary_server.standby(data_directory("trace-summaries-standby-"))
    stack.callback(standby_server.remove)
    primary = Database(primary_server, "app")
    standby = Database(standby_server, "app")
    primary.migrate("upgrade", FIRST)
    primary.execute(LISTING_DATA_SQL)
    primary.migrate("upgrade", "head")
    jobid = job_id(partial(primary_server.connect, "app"), primary.job_name)
    hurry(partial(primary_server.connect, "app"), jobid)  # replayed on the standby too
    wait_for_replay(primary, standby)
    assert standby.scalar("SELECT pg_is_in_recovery()") is True
    assert standby.scalar("SELECT count(*) FROM otel_trace_summaries") == 50_000

    # Reads on the standby overlap concurrent refreshes (with changing rows) on the primary.
    done = threading.Event()
    refreshes = []

    def refresh_on_primary():
        with primary.connect(autocommit=True) as conn:
            while not done.is_set():
                conn.execute(
                    "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
                    "VALUES (now(), md5(random()::text), 'root', 'GET /during')"
                )
                conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries")
                refreshes.append(1)

    worker = threading.Thread(target=refresh_on_primary)
    worker.start()
    reads, errors = 0, []
    try:
        with standby.connect(autocommit=True) as reader:
            reader.execute("SET statement_timeout = '5s'")
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline or len(refreshes) < 3:
                try:
                    rows = reader.execute(
                        "SELECT * FROM otel_trace_summaries ORDER BY timestamp DESC LIMIT 10"
                    ).fetchall()
                    assert len(rows) == 10
                    reads += 1
                except psycopg.Error as error:  # a conflict would cancel the query
                    errors.append(str(error))
    finally:
        done.set()
        worker.join()

    # Failover: stop the primary, promote the standby, write a span there.
    wait_for_replay(primary, standby)
    primary_server.stop()
    standby_server.promote()
    assert standby.scalar("SELECT pg_is_in_recovery()") is False
    standby.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'after-failover', 'root', 'GET /after')"
    )
    promoted_at = standby.scalar("SELECT now()")  # after the span, as in migrate()
    return Failover(standby, jobid, promoted_at, reads, len(refreshes), errors)


@pytest.fixture(scope="module")
def shapes(cron_server) -> Iterator[dict]:
    """Every shape on the major version of ``cron_server`` (its build and its pg_cron)."""
    install = cron_server.install
    with ExitStack() as stack:
        found: dict = {}

        # 1: the extension in this database; the view, and the incremental mode.
        found["here"] = migrate(
            stack.enter_context(schema_in(cron_server, cron_server.cron_database)),
            cron_server,
            cron_server.cron_database,
        )
        found["here_incremental"] = migrate(
            stack.enter_context(schema_in(cron_server, cron_server.cron_database)),
            cron_server,
            cron_server.cron_database,
            x={"summaries": "incremental"},
        )

        # 2: preloaded, cron.database_name is this database, extension not created yet.
        bare = stack.enter_context(
            local_server(
                "bare", install, pg_cron_database="app", create_extension=False, password=PASSWORD
            )
        )
        # First, while there is no extension: roles that may not create it.
        as_app = owned_schema(stack, bare, "app", read_settings=True)
        found["bare_app_role"] = migrate(as_app, bare, "app")
        hidden = owned_schema(stack, bare, "app", read_settings=False)
        found["bare_hidden_settings"] = migrate(hidden, bare, "app")
        found["bare"] = migrate(Database(bare, "app"), bare, "app")

        # 3: pg_cron lives in the postgres database; the app database is another one.
        elsewhere = stack.enter_context(
            local_server(
                "elsewhere", install, pg_cron_database=DEFAULT_CRON_DATABASE, password=PASSWORD
            )
        )
        elsewhere.create_database("app")
        found["elsewhere"] = migrate(Database(elsewhere, "app"), elsewhere, DEFAULT_CRON_DATABASE)
        found["elsewhere_app_role"] = migrate(
            owned_schema(stack, elsewhere, "app", read_settings=True),
            elsewhere,
            DEFAULT_CRON_DATABASE,
        )

        # 3': CNPG's default layout: `app` may use cron.schedule_in_database, reads no settings.
        cnpg = stack.enter_context(
            local_server("cnpg", install, pg_cron_database=DEFAULT_CRON_DATABASE, password=PASSWORD)
        )
        app = app_database(stack, cnpg)
        found["cnpg_default"] = migrate(app, cnpg, DEFAULT_CRON_DATABASE)

        # 3'': pg_cron in a database that only -x cron_database names.
        custom = stack.enter_context(
            local_server("custom", install, pg_cron_database="scheduler", password=PASSWORD)
        )
        found["custom_unnamed"] = migrate(app_database(stack, custom), custom, "scheduler")
        found["custom_named"] = migrate(
            app_database(stack, custom),
            custom,
            "scheduler",
            x={"cron_database": "scheduler"},
        )

        # 6: CNPG's authentication with background workers off.
        libpq = stack.enter_context(
            local_server(
                "libpq",
                install,
                pg_cron_database="app",
                background_workers=False,
                password=PASSWORD,
            )
        )
        found["libpq"] = migrate(Database(libpq, "app"), libpq, "app")

        found["failover"] = drill(stack, install)
        yield found


# -- 1 ---------------------------------------------------------------------------------------
def test_extension_in_this_database_schedules_with_a_notice_and_the_job_runs(shapes):
    shape = shapes["here"]
    assert 'NOTICE: pg_cron job "' in shape.notices
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert run["return_message"] == "REFRESH MATERIALIZED VIEW"
    assert shape.shows("after")


def test_the_incremental_mode_job_calls_the_refresh_and_the_new_span_appears(shapes):
    shape = shapes["here_incremental"]
    assert "CALL " in shape.notices and "otel_trace_summaries_refresh(false, " in shape.notices
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert shape.shows("after")
    result = run_cli("status", "--json", DATABASE_URL=shape.database.url)
    assert result.returncode == 0, result.stdout


def test_status_is_ok_once_the_job_has_succeeded(shapes):
    shape = shapes["here"]
    shape.first_run()
    result = run_cli("status", DATABASE_URL=shape.database.url)
    assert result.returncode == 0, result.stdout
    assert "last run           succeeded" in result.stdout


# -- 2 ---------------------------------------------------------------------------------------
def test_preloaded_without_extension_a_superuser_migration_creates_it_and_the_job_runs(shapes):
    shape = shapes["bare"]
    assert "created extension pg_cron in database app" in shape.notices
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert shape.shows("after")


def test_preloaded_without_extension_a_role_that_may_not_create_it_gets_the_statement(shapes):
    shape = shapes["bare_app_role"]
    assert shape.jobid is None
    notice = next(line for line in shape.notices.splitlines() if "preloaded" in line)
    assert notice.startswith("WARNING")
    assert '"CREATE EXTENSION pg_cron" in database app' in notice
    assert "manual refresh is required" in notice
    assert shape.shows("before")


def test_a_role_that_cannot_read_pg_crons_settings_is_told_what_to_grant_and_run(shapes):
    shape = shapes["bare_hidden_settings"]
    assert shape.jobid is None
    role = shape.database.role
    notice = next(line for line in shape.notices.splitlines() if "hidden from it" in line)
    assert f"GRANT pg_read_all_settings TO {role}" in notice
    assert "-x cron_database=NAME" in notice
    assert '"CREATE EXTENSION pg_cron" here' in notice
    assert "SELECT cron.schedule_in_database(" in notice
    assert "manual refresh is required" in notice


# -- 3 ---------------------------------------------------------------------------------------
def test_pg_cron_in_another_database_schedules_there_for_this_database_and_the_job_runs(shapes):
    shape = shapes["elsewhere"]
    assert "scheduled in database postgres" in shape.notices
    with shape.cron_connect() as conn:
        database, command = conn.execute(
            "SELECT database, command FROM cron.job WHERE jobid = %s", (shape.jobid,)
        ).fetchone()
    assert database == "app"
    assert command == "REFRESH MATERIALIZED VIEW CONCURRENTLY public.otel_trace_summaries"
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert shape.shows("after")


def test_pg_cron_in_another_database_without_permission_gets_the_statement_and_grant(shapes):
    shape = shapes["elsewhere_app_role"]
    assert shape.jobid is None
    role = shape.database.role
    notice = next(line for line in shape.notices.splitlines() if "could not schedule" in line)
    assert notice.startswith("WARNING")
    assert "SELECT cron.schedule_in_database(" in notice
    assert f"GRANT USAGE ON SCHEMA cron TO {role}" in notice
    assert f"cron.schedule_in_database(text, text, text, text, text, boolean) TO {role}" in notice
    assert "manual refresh is required" in notice


def test_pg_cron_in_another_database_downgrade_removes_that_job_too(shapes):
    shape = shapes["elsewhere"]
    shape.first_run()  # let the run tests see it first
    notices = shape.database.migrate("downgrade", "-1")
    assert "unscheduled in database postgres" in notices
    assert job_id(shape.cron_connect, shape.database.job_name) is None
    shape.database.migrate("upgrade", "head")
    assert job_id(shape.cron_connect, shape.database.job_name) is not None


def test_cnpg_default_layout_schedules_in_postgres_for_app_and_the_job_runs(shapes):
    """pg_cron in postgres, the app database, `app` with no pg_read_all_settings."""
    shape = shapes["cnpg_default"]
    role = shape.database.role
    assert (
        shape.database.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)) is False
    )
    assert "pg_cron's default database, postgres" in shape.notices
    with shape.cron_connect() as conn:
        database, username = conn.execute(
            "SELECT database, username FROM cron.job WHERE jobid = %s", (shape.jobid,)
        ).fetchone()
    assert (database, username) == (shape.database.dbname, role)
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert shape.shows("after")
    status = run_cli("status", DATABASE_URL=shape.database.url)
    assert "in database postgres" in status.stdout
    assert status.returncode == 0, status.stdout


def test_pg_cron_in_a_database_only_the_option_names_is_found_with_it(shapes):
    unnamed, named = shapes["custom_unnamed"], shapes["custom_named"]
    assert unnamed.jobid is None
    assert "-x cron_database=NAME" in unnamed.notices
    assert named.jobid is not None
    assert "scheduled in database scheduler" in named.notices


# -- 6 ---------------------------------------------------------------------------------------
def test_cnpg_auth_with_background_workers_off_warns_and_jobs_cannot_connect(shapes):
    shape = shapes["libpq"]
    warning = next(
        line for line in shape.notices.splitlines() if "cron.use_background_workers is off" in line
    )
    assert warning.startswith("WARNING")
    assert "pg_hba.conf" in warning
    run = shape.first_run()
    assert (run["status"], run["return_message"]) == ("failed", "connection failed")
    assert not shape.shows("after")
    status = run_cli("status", DATABASE_URL=shape.database.url)
    assert status.returncode == 2
    assert "the last pg_cron run failed: connection failed" in status.stdout


def test_cnpg_auth_with_background_workers_on_jobs_run(shapes):
    """The same authentication as shape 6, but background workers: the job succeeds."""
    for name in ("bare", "elsewhere", "cnpg_default"):
        run = shapes[name].first_run()
        assert run["status"] == "succeeded", (name, run)


# -- failover ----------------------------------------------------------------------------------
def test_standby_reads_are_neither_blocked_nor_cancelled_by_refreshes_on_the_primary(
    shapes, report
):
    drill = shapes["failover"]
    report(
        f"{drill.reads} standby reads during {drill.refreshes} primary refreshes, "
        f"errors: {drill.errors}"
    )
    assert drill.errors == []
    assert drill.refreshes >= 3


def test_after_promotion_the_new_primary_runs_the_refresh_job(shapes, report):
    drill = shapes["failover"]
    run = first_run_after(drill.standby.connect, drill.jobid, drill.promoted_at)
    assert run["status"] == "succeeded", run
    assert (
        drill.standby.scalar(
            "SELECT count(*) FROM otel_trace_summaries WHERE trace_id = 'after-failover'"
        )
        == 1
    )
    took = (run["end_time"] - drill.promoted_at).total_seconds()
    report(f"promotion to first successful pg_cron refresh: {took:.1f}s (the */2 schedule)")
