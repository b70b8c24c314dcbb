"""Fixtures: throwaway PostgreSQL servers, and databases, schemas and roles in them.

Servers (one set per pytest-xdist worker, started on first use):

* ``server``: every installed major version, without pg_cron, authenticating
  like CNPG (peer on the socket, SCRAM on TCP): Debian's PostgreSQL and the
  PostgreSQL 18 of the ``pg18`` extra. Test ids name it: ``[pg15]``, ``[pg18]``.
* ``cron_server``: pg_cron preloaded, ``cron.database_name`` =
  ``trace_summaries_cron`` with the extension created (as CNPG bootstraps
  it), background workers on; per major version too: PostgreSQL 15 with
  Debian's pg_cron 1.4, 18 with the 1.6 that ``make extensions`` builds.
* ``timescaledb_server``: the same, TimescaleDB preloaded as well (telemetry
  off), per major version; ``timescaledb_db`` is a fresh database on it with
  the extension created.

A major version without the extension skips the tests that need it, saying
what to install. With ``TEST_DATABASE_URL`` the tests use that server for all,
creating and dropping databases (and schemas in its cron.database_name); tests
that need a server it is not are skipped, with the reason. With
``TRACE_SUMMARIES_NO_SKIPS=1`` (set by .ci/run) a skipped test fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, pool

from cnpg_trace_summaries.dev.servers import ServerError
from tests.support import ROOT
from tests.support.database import Database, new_database, schema_in
from tests.support.roles import ROLE_PASSWORD, login_role
from tests.support.servers import NO_SKIPS, ServerPool, fresh_database, labels
from tests.support.stores import HYPERTABLE, prepare


# -- no skips in the project's own CI ---------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if NO_SKIPS and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped with TRACE_SUMMARIES_NO_SKIPS=1, which fails the run: {reason}"


def pytest_collection_modifyitems(config, items):
    """The units of work (tests.support.scheduling) with a test that waits for a real pg_cron
    tick go first, so the wait overlaps the rest; then the largest units, as xdist's
    loadscope orders them."""
    from tests.support.scheduling import scope

    sizes = Counter(scope(item.nodeid) for item in items)
    ticking = {scope(item.nodeid) for item in items if item.get_closest_marker("pg_cron_tick")}
    # By unit only (a stable sort): within one, pytest's order, which sets up each
    # parameter of a module-scoped fixture once.
    items.sort(
        key=lambda item: (
            scope(item.nodeid) not in ticking,
            -sizes[scope(item.nodeid)],
            scope(item.nodeid),
        )
    )


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: one unit of work per module and server (tests.support.scheduling)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.support.scheduling import ModuleAndServerScheduling

    return ModuleAndServerScheduling(config, log)


# Figures the tests measured, gathered from every worker's reports, shown at the end.
MEASURED: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        MEASURED.extend(value for name, value in report.user_properties if name == "measured")


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured")
        for line in sorted(MEASURED):
            terminalreporter.write_line(line)


@pytest.fixture
def report(request):
    """Record a measured figure, named after the test; the run prints them all at its end."""
    return lambda line: request.node.user_properties.append(
        ("measured", f"{request.node.name}: {line}")
    )


# -- servers ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool_ = ServerPool()
    yield pool_
    pool_.close()


def available(start, label: str):
    """``start(label)``, or the test skips with what is missing."""
    try:
        return start(label)
    except ServerError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session", params=labels())
def server(request, server_pool):
    """A server without pg_cron (with TEST_DATABASE_URL: that server), per major version."""
    return server_pool.plain(request.param)


@pytest.fixture(scope="session", params=labels())
def cron_server(request, server_pool):
    return available(server_pool.cron, request.param)


@pytest.fixture(scope="session", params=labels())
def timescaledb_server(request, server_pool):
    return available(server_pool.timescaledb, request.param)


@pytest.fixture
def nocron_server(server):
    if server.has_pg_cron:
        pytest.skip("TEST_DATABASE_URL's server has pg_cron; this test needs one without")
    return server


# -- databases -------------------------------------------------------------------------------
@pytest.fixture
def db(server) -> Iterator[Database]:
    """A fresh database on ``server``, reached as its superuser."""
    with new_database(server) as database:
        yield database


@pytest.fixture
def nocron_db(nocron_server) -> Iterator[Database]:
    """A fresh database on a server without pg_cron."""
    with new_database(nocron_server) as database:
        yield database


@pytest.fixture
def cron_db(cron_server) -> Iterator[Database]:
    """A fresh schema in the database pg_cron lives in, reached as the superuser."""
    with schema_in(cron_server, cron_server.cron_database) as database:
        yield database


@pytest.fixture
def timescaledb_db(timescaledb_server) -> Iterator[Database]:
    """A fresh database with the timescaledb extension, reached as the superuser."""
    with new_database(timescaledb_server) as database:
        prepare(timescaledb_server, database.dbname, HYPERTABLE)
        yield database


@pytest.fixture
def app_db(server) -> Iterator[Database]:
    """A database owned by a non-superuser login role, reached as that role (CNPG's `app`)."""
    with login_role(server) as role, fresh_database(server, "app", owner=role) as name:
        yield Database(server, name, user=role, password=ROLE_PASSWORD)


@pytest.fixture
def app_cron_db(cron_server) -> Iterator[Database]:
    """A schema in the pg_cron database owned by, and reached as, a non-superuser login role."""
    with (
        login_role(cron_server, databases=(cron_server.cron_database,)) as role,
        schema_in(cron_server, cron_server.cron_database, role, ROLE_PASSWORD) as database,
    ):
        yield database


# -- pytest-alembic ------------------------------------------------------------------------
@pytest.fixture
def alembic_config():
    return {"file": str(ROOT / "alembic.ini"), "script_location": str(ROOT / "alembic")}


@pytest.fixture(
    params=[
        *(f"with_pg_cron-{label}" for label in labels()),
        *(f"without_pg_cron-{label}" for label in labels()),
    ]
)
def alembic_engine(request, server_pool):
    """pytest-alembic's standard checks run on every kind of server."""
    kind, _, label = request.param.partition("-")
    if kind == "with_pg_cron":
        found = available(server_pool.cron, label)
        context = schema_in(found, found.cron_database)
    else:
        found = server_pool.plain(label)
        context = new_database(found)
    with context as database:
        engine = create_engine(
            database.url.replace("postgresql://", "postgresql+psycopg://", 1),
            poolclass=pool.NullPool,
        )
        yield engine
        engine.dispose()
