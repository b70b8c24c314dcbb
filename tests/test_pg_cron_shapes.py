"""pg_cron the way clusters really run it: every shape ends in a job that runs, or a NOTICE.

Each shape is a real cluster. The module migrates every shape first, then the
tests wait for pg_cron's next tick together (one wait of at most two minutes),
and each checks cron.job_run_details for its own job.

| shape | cluster |
|---|---|
| 1 extension created in this database | cron_server (trust auth) |
| 2 preloaded, this is cron.database_name, no extension yet | bare: CNPG auth |
| 3 pg_cron lives in another database (CNPG's default: postgres) | elsewhere: CNPG auth |
| 4 not preloaded | plain_server (tests/test_spec_scenarios.py) |
| 5 extension there, role may not use schema cron | tests/test_least_privilege.py |
| 6 CNPG auth with background workers off: libpq to cron.host fails | libpq: CNPG auth |
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial

import pytest
from psycopg import sql

from tests.clusters import Server, local_server
from tests.conftest import (
    TEST_DATABASE_URL,
    Database,
    first_run_after,
    login_role,
    schema_in_cron_database,
)

PASSWORD = "cnpg-like-password"

pytestmark = pytest.mark.skipif(
    bool(TEST_DATABASE_URL), reason="the pg_cron shapes need clusters the tests configure"
)


@dataclass
class Shape:
    database: Database
    cron_server: Server
    cron_database: str
    upgrade_stderr: str
    jobid: int | None = None
    prepared_at: object = None
    extra: dict = field(default_factory=dict)

    def cron_connect(self):
        return self.cron_server.connect(self.cron_database)

    def first_run(self) -> dict:
        assert self.jobid is not None, self.upgrade_stderr
        return first_run_after(self.cron_connect, self.jobid, self.prepared_at)


def job_of(server: Server, cron_database: str, jobname: str) -> int | None:
    with server.connect(cron_database) as conn:
        row = conn.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (jobname,)).fetchone()
    return row[0] if row else None


def owned_schema(
    stack: ExitStack, server: Server, dbname: str, *, read_settings: bool = True
) -> Database:
    """A schema owned by a new non-superuser role, reached as that role.

    ``read_settings``: the role may read pg_cron's settings (pg_read_all_settings).
    """
    role = stack.enter_context(login_role(server))
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with server.connect(dbname, autocommit=True) as conn:
        if read_settings:
            conn.execute(
                sql.SQL("GRANT pg_read_all_settings TO {}").format(sql.Identifier(role.user))
            )
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(role.user)
            )
        )
    stack.callback(partial(drop_schema, server, dbname, schema))
    return Database(role, dbname, schema)


def drop_schema(server: Server, dbname: str, schema: str) -> None:
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def migrate(database: Database, cron_server: Server, cron_database: str) -> Shape:
    database.alembic("upgrade", "00000000000001")
    database.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'before', 'root', 'GET /before')"
    )
    result = database.alembic("upgrade", "head")
    shape = Shape(database, cron_server, cron_database, result.stderr)
    if cron_server.has_pg_cron:
        try:
            shape.jobid = job_of(cron_server, cron_database, database.job_name)
        except Exception:  # no cron schema there: no job
            shape.jobid = None
    with cron_server.connect(cron_database) as conn:
        shape.prepared_at = conn.execute("SELECT now()").fetchone()[0]
    # A span that only a refresh after the migration can show.
    database.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'after', 'root', 'GET /after')"
    )
    return shape


@pytest.fixture(scope="module")
def shapes(cron_server: Server) -> Iterator[dict[str, Shape]]:
    with ExitStack() as stack:
        found: dict[str, Shape] = {}

        # 1: the extension in this database.
        database = stack.enter_context(schema_in_cron_database(cron_server))
        found["here"] = migrate(database, cron_server, cron_server.cron_database)

        # 2: preloaded, cron.database_name is this database, extension not created yet.
        bare = stack.enter_context(
            local_server("bare", pg_cron_database="app", create_extension=False, password=PASSWORD)
        )
        # First, while there is no extension: roles that may not create it.
        as_app = owned_schema(stack, bare, "app")
        found["bare_app_role"] = migrate(as_app, bare, "app")
        hidden = owned_schema(stack, bare, "app", read_settings=False)
        found["bare_hidden_settings"] = migrate(hidden, bare, "app")
        found["bare"] = migrate(Database(bare, "app"), bare, "app")

        # 3: pg_cron lives in the postgres database; the app database is another one.
        elsewhere = stack.enter_context(
            local_server("elsewhere", pg_cron_database="postgres", password=PASSWORD)
        )
        elsewhere.janitor("app").init()
        found["elsewhere"] = migrate(Database(elsewhere, "app"), elsewhere, "postgres")
        as_app = owned_schema(stack, elsewhere, "app")
        found["elsewhere_app_role"] = migrate(as_app, elsewhere, "postgres")

        # 6: CNPG's authentication with background workers off.
        libpq = stack.enter_context(
            local_server(
                "libpq", pg_cron_database="app", background_workers=False, password=PASSWORD
            )
        )
        found["libpq"] = migrate(Database(libpq, "app"), libpq, "app")
        yield found


def view_shows(shape: Shape, trace_id: str) -> bool:
    return bool(
        shape.database.scalar(
            "SELECT count(*) FROM otel_trace_summaries WHERE trace_id = %s", (trace_id,)
        )
    )


# -- 1 -------------------------------------------------------------------------------
def test_extension_in_this_database_schedules_with_a_notice_and_the_job_runs(shapes):
    shape = shapes["here"]
    assert 'NOTICE: pg_cron job "' in shape.upgrade_stderr
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert view_shows(shape, "after")


# -- 2 -------------------------------------------------------------------------------
def test_preloaded_without_extension_a_superuser_migration_creates_it_and_the_job_runs(shapes):
    shape = shapes["bare"]
    assert "created extension pg_cron in database app" in shape.upgrade_stderr
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert view_shows(shape, "after")


def test_preloaded_without_extension_a_role_that_may_not_create_it_gets_the_statement(shapes):
    shape = shapes["bare_app_role"]
    assert shape.jobid is None
    notice = next(line for line in shape.upgrade_stderr.splitlines() if "preloaded" in line)
    assert '"CREATE EXTENSION pg_cron" in database app' in notice
    assert "manual refresh is required" in notice
    assert view_shows(shape, "before")


def test_a_role_that_cannot_read_pg_crons_settings_is_told_what_to_grant_and_run(shapes):
    shape = shapes["bare_hidden_settings"]
    assert shape.jobid is None
    role = shape.database.server.user
    notice = next(line for line in shape.upgrade_stderr.splitlines() if "hidden from it" in line)
    assert f"GRANT pg_read_all_settings TO {role}" in notice
    assert '"CREATE EXTENSION pg_cron" here' in notice
    assert "SELECT cron.schedule_in_database(" in notice
    assert "manual refresh is required" in notice


# -- 3 -------------------------------------------------------------------------------
def test_pg_cron_in_another_database_schedules_there_for_this_database_and_the_job_runs(shapes):
    shape = shapes["elsewhere"]
    assert "scheduled in database postgres" in shape.upgrade_stderr
    with shape.cron_connect() as conn:
        database, command = conn.execute(
            "SELECT database, command FROM cron.job WHERE jobid = %s", (shape.jobid,)
        ).fetchone()
    assert database == "app"
    assert command == "REFRESH MATERIALIZED VIEW CONCURRENTLY public.otel_trace_summaries"
    run = shape.first_run()
    assert run["status"] == "succeeded", run
    assert view_shows(shape, "after")


def test_pg_cron_in_another_database_without_permission_gets_the_statement_and_grant(shapes):
    shape = shapes["elsewhere_app_role"]
    assert shape.jobid is None
    role = shape.database.server.user
    notice = next(
        line for line in shape.upgrade_stderr.splitlines() if "could not schedule" in line
    )
    assert "SELECT cron.schedule_in_database(" in notice
    assert f"GRANT USAGE ON SCHEMA cron TO {role}" in notice
    assert f"cron.schedule_in_database(text, text, text, text, text, boolean) TO {role}" in notice
    assert "manual refresh is required" in notice


def test_pg_cron_in_another_database_downgrade_removes_that_job_too(shapes):
    shape = shapes["elsewhere"]
    shape.first_run()  # let the run tests see it first
    result = shape.database.alembic("downgrade", "-1")
    assert "unscheduled in database postgres" in result.stderr
    assert job_of(shape.cron_server, "postgres", shape.database.job_name) is None
    shape.database.alembic("upgrade", "head")
    assert job_of(shape.cron_server, "postgres", shape.database.job_name) is not None


# -- 6 -------------------------------------------------------------------------------
def test_cnpg_auth_with_background_workers_off_warns_and_jobs_cannot_connect(shapes):
    shape = shapes["libpq"]
    assert "cron.use_background_workers is off" in shape.upgrade_stderr
    assert "pg_hba.conf" in shape.upgrade_stderr
    run = shape.first_run()
    assert (run["status"], run["return_message"]) == ("failed", "connection failed")
    assert not view_shows(shape, "after")


def test_cnpg_auth_with_background_workers_on_jobs_run(shapes):
    """The same authentication as shape 6, but background workers: the job succeeds."""
    for name in ("bare", "elsewhere"):
        run = shapes[name].first_run()
        assert run["status"] == "succeeded", (name, run)
