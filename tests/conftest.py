"""Fixtures: two throwaway PostgreSQL servers, databases in them, alembic runs.

* ``cron_server``: pg_cron preloaded, ``cron.database_name`` =
  ``trace_summaries_cron`` with the extension created (as CNPG bootstraps it),
  background workers on.
* ``plain_server``: no pg_cron at all.

Tests that need pg_cron get a fresh *schema* in the pg_cron database
(``cron_db``): the extension can only live in that one database, and
dropping that database would stop pg_cron's scheduler for good. Putting the
schema first on the search_path also proves that the job's command is
schema-qualified, as pg_cron runs it in a fresh session.

With ``TEST_DATABASE_URL`` the tests use that server instead, creating and
dropping their own databases (and schemas in its cron.database_name); the
tests that need a server without pg_cron are skipped, with the reason.
Under ``CI=true`` a skipped test fails the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, pool

from cnpg_trace_summaries.schema import refresh_job_name
from tests.clusters import CRON_DATABASE, Server, external_server, local_server

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
# The server without pg_cron asks for a password, so bad credentials can be tested.
PLAIN_SERVER_PASSWORD = "s3cret-for-tests"


# -- no skips under CI ----------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which fails the run: {reason}"


@pytest.fixture
def report(request):
    """Write a measured figure to the test run's output (shown even when captured)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[{request.node.name}] {line}")

    return write


# -- servers -------------------------------------------------------------------
@pytest.fixture(scope="session")
def cron_server() -> Iterator[Server]:
    if TEST_DATABASE_URL:
        server = external_server(TEST_DATABASE_URL)
        if not server.has_pg_cron:
            pytest.skip("the TEST_DATABASE_URL server has no pg_cron in shared_preload_libraries")
        yield server
        return
    with local_server("cron", pg_cron_database=CRON_DATABASE) as server:
        yield server


@pytest.fixture(scope="session")
def plain_server() -> Iterator[Server]:
    if TEST_DATABASE_URL:
        pytest.skip("TEST_DATABASE_URL is set: this test needs a server without pg_cron")
    with local_server("plain", password=PLAIN_SERVER_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def any_server(request) -> Server:
    """A server for tests that do not care about pg_cron."""
    if TEST_DATABASE_URL:
        return external_server(TEST_DATABASE_URL)
    return request.getfixturevalue("plain_server")


# -- databases -----------------------------------------------------------------
@dataclass
class Database:
    """One place to migrate: a database, and the schema first on its search_path."""

    server: Server
    dbname: str
    schema: str = "public"
    upgrade_output: subprocess.CompletedProcess | None = None

    @property
    def url(self) -> str:
        return self.server.url(self.dbname, None if self.schema == "public" else self.schema)

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.replace("postgresql://", "postgresql+psycopg://", 1)

    @property
    def job_name(self) -> str:
        return refresh_job_name(self.dbname, self.schema)

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, **kwargs)

    def scalar(self, sql: str, params: tuple = ()):
        with self.connect() as conn:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else row[0]

    def execute(self, sql: str, params: tuple | None = None) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(sql, params)

    def alembic(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the alembic command line against this database, as a user would."""
        return run_alembic(*args, database_url=self.url, check=check)


def run_python_module(
    module: str, *args: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m module args`` from the checkout, as a user would run the command."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def environment(**overrides: str | None) -> dict[str, str]:
    """This process's environment without the test's own database settings, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL"}}
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def run_alembic(
    *args: str, database_url: str | None, check: bool = True
) -> subprocess.CompletedProcess:
    result = run_python_module(
        "alembic",
        "-c",
        str(ROOT / "alembic.ini"),
        *args,
        env=environment(DATABASE_URL=database_url),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"alembic {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``trace-summaries args`` with ``env`` (DATABASE_URL=..., ...) added to the environment."""
    return run_python_module("cnpg_trace_summaries.cli", *args, env=environment(**env), timeout=300)


@contextmanager
def schema_in_cron_database(
    server: Server, owner: Server | None = None, *, cron_usage: bool = False
) -> Iterator[Database]:
    """A fresh schema in the database pg_cron lives in, dropped with its job afterwards.

    ``owner``: the schema belongs to that login (a non-superuser, see login_role)
    and is reached as it; ``cron_usage`` also grants it USAGE on schema cron.
    """
    schema = f"t_{uuid.uuid4().hex[:10]}"
    as_user = owner or server
    database = Database(as_user, server.cron_database, schema)
    with server.connect(server.cron_database, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(as_user.user)
            )
        )
        if cron_usage:
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(sql.Identifier(as_user.user))
            )
    try:
        yield database
    finally:
        with server.connect(server.cron_database, autocommit=True) as conn:
            conn.execute("DELETE FROM cron.job WHERE jobname = %s", (database.job_name,))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def cron_db(cron_server: Server) -> Iterator[Database]:
    """A fresh schema in the database pg_cron lives in."""
    with schema_in_cron_database(cron_server) as database:
        yield database


@pytest.fixture
def nocron_db(plain_server: Server) -> Iterator[Database]:
    """A fresh database on the server that has no pg_cron at all."""
    with plain_server.fresh_database() as dbname:
        yield Database(plain_server, dbname)


@pytest.fixture
def fresh_db(any_server: Server) -> Iterator[Database]:
    """A fresh database, pg_cron or not."""
    with any_server.fresh_database() as dbname:
        yield Database(any_server, dbname)


# -- pg_cron runs ----------------------------------------------------------------
TICK_TIMEOUT_SECONDS = 200


def first_run_after(connect, jobid: int, after) -> dict:
    """The first finished cron.job_run_details row of ``jobid`` that started after ``after``.

    ``connect`` opens a connection to the database pg_cron lives in. Waits for
    pg_cron's next tick: at most about two minutes for a */2 schedule.
    """
    deadline = time.monotonic() + TICK_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with connect() as conn:
            row = conn.execute(
                # A run that could not connect has no start_time.
                "SELECT status, return_message, start_time, end_time FROM cron.job_run_details "
                "WHERE jobid = %s AND (start_time > %s OR start_time IS NULL) "
                "AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1",
                (jobid, after),
            ).fetchone()
        if row:
            return dict(
                zip(("status", "return_message", "start_time", "end_time"), row, strict=True)
            )
        time.sleep(2)
    raise AssertionError(f"pg_cron did not run job {jobid} within {TICK_TIMEOUT_SECONDS}s")


# -- roles ---------------------------------------------------------------------
ROLE_PASSWORD = "app-password"


@contextmanager
def login_role(server: Server, prefix: str = "app") -> Iterator[Server]:
    """A new NOSUPERUSER login role; yields the server as seen by that role."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with server.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(ROLE_PASSWORD)
            )
        )
    try:
        yield replace(server, user=name, password=ROLE_PASSWORD, executor=None)
    finally:
        databases = [server.cron_database] if server.cron_database else []
        for dbname in [*databases, "postgres"]:
            with server.connect(dbname, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        with server.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def app_db(any_server: Server) -> Iterator[Database]:
    """A database owned by a non-superuser role, reached as that role (CNPG's `app`)."""
    with login_role(any_server) as app:
        dbname = f"app_{uuid.uuid4().hex[:8]}"
        with any_server.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(app.user)
                )
            )
        try:
            yield Database(app, dbname)
        finally:
            with any_server.connect(autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname))
                )


@pytest.fixture
def app_cron_db(cron_server: Server) -> Iterator[Database]:
    """A schema owned by a non-superuser role in the pg_cron database, reached as that role."""
    with login_role(cron_server) as app, schema_in_cron_database(cron_server, app) as database:
        yield database


# -- data ----------------------------------------------------------------------
LISTING_TRACES = 50_000

# 50,000 traces of three spans (one root, two children) spread over the last
# 6.9 days, five root services, every 50th trace with one error span; then
# 1,000 traces older than the window and 100 spans with an empty trace_id,
# which the view must leave out. Generated by the server: loading takes ~1 s.
LISTING_DATA_SQL = f"""
INSERT INTO otel_traces ("timestamp", trace_id, span_id, parent_span_id, name, kind,
                         start_time_unix_nano, end_time_unix_nano, service_name,
                         status_code, status_message)
SELECT x.ts + s * interval '1 millisecond',
       md5('trace' || t),
       left(md5('span' || t || '.' || s), 16),
       CASE WHEN s = 0 THEN NULL ELSE left(md5('span' || t || '.0'), 16) END,
       CASE WHEN s = 0 THEN 'GET /api/' || (t % 20) ELSE 'call-' || s END,
       CASE WHEN s = 0 THEN 2 ELSE 3 END,
       CAST(extract(epoch FROM x.ts) * 1e9 AS bigint) + s * 1000000,
       CAST(extract(epoch FROM x.ts) * 1e9 AS bigint) + (3 - s) * 5000000,
       (ARRAY['my-service', 'checkout', 'cart', 'payment', 'frontend'])[1 + (t + s) % 5],
       CASE WHEN t % 50 = 0 AND s = 2 THEN 2 WHEN s = 1 THEN 1 ELSE 0 END,
       CASE WHEN t % 50 = 0 AND s = 2 THEN 'boom' ELSE '' END
FROM generate_series(1, {LISTING_TRACES}) AS t
CROSS JOIN LATERAL (
    SELECT now() - t * interval '1 second' * (6.9 * 86400 / {LISTING_TRACES}) AS ts
) AS x
CROSS JOIN generate_series(0, 2) AS s;

INSERT INTO otel_traces ("timestamp", trace_id, span_id, name, service_name, status_code)
SELECT now() - interval '8 days' - t * interval '1 minute', md5('stale' || t),
       'root', 'old', 'cart', 0
FROM generate_series(1, 1000) AS t;

INSERT INTO otel_traces ("timestamp", trace_id, span_id, name, service_name, status_code)
SELECT now() - t * interval '1 minute', '', 'orphan' || t, 'no trace id', 'cart', 0
FROM generate_series(1, 100) AS t;
"""


@pytest.fixture(scope="module", params=["as_superuser", "as_app_owner"])
def listing_db(request, cron_server: Server) -> Iterator[Database]:
    """A pg_cron schema holding 50,000 traces of spans, then migrated to head.

    The spans are there before the migration runs, as in the spec's scenario
    "the migration runs against a CNPG cluster with existing trace data". Once
    as the superuser, once as CNPG's kind of `app` user: a non-superuser that
    owns its schema and may use schema cron.
    """
    with ExitStack() as stack:
        owner = None
        if request.param == "as_app_owner":
            owner = stack.enter_context(login_role(cron_server))
        database = stack.enter_context(
            schema_in_cron_database(cron_server, owner, cron_usage=owner is not None)
        )
        database.alembic("upgrade", "00000000000001")
        database.execute(LISTING_DATA_SQL)
        database.execute("ANALYZE otel_traces")
        database.upgrade_output = database.alembic("upgrade", "head")
        yield database


# -- pytest-alembic ------------------------------------------------------------
@pytest.fixture
def alembic_config():
    return {"file": str(ROOT / "alembic.ini"), "script_location": str(ROOT / "alembic")}


@pytest.fixture(params=["with_pg_cron", "without_pg_cron"])
def alembic_engine(request):
    """pytest-alembic's standard checks run on both kinds of server."""
    if request.param == "with_pg_cron":
        database = request.getfixturevalue("cron_db")
    else:
        database = request.getfixturevalue("nocron_db")
    engine = create_engine(database.sqlalchemy_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()
