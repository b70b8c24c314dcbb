"""The incremental mode installed and removed on a live store: no insert waits, nothing half done.

* A downgrade that meets a reader or a refresh fails under ``lock_timeout``
  before it touches otel_traces, and leaves the summaries, the triggers and
  the job as they were.
* Upgrading over what an interrupted install left removes it in a
  transaction of its own, before the (long) build.
* An install that fails (a GRANT, scheduling with ``require_refresh``) leaves
  no trigger and no helper table behind.
* A TRUNCATE and a refresh that meet do not deadlock.
* Any schema name works, quotes, dots, spaces and all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql
from sqlalchemy import exc

from cnpg_trace_summaries.contract import (
    DIRTY_TABLE,
    REFRESH_LOCK_CLASS,
    STAGING_TABLE,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    lock_key_sql,
)
from cnpg_trace_summaries.sql import incremental
from cnpg_trace_summaries.sql.common import NEXT
from tests.support.commands import assert_one_clear_line, switch
from tests.support.cron import jobs_named
from tests.support.data import Ingest
from tests.support.database import Database
from tests.support.incremental import (
    INCREMENTAL,
    assert_exact,
    install,
    refresh,
    traces_sql,
)
from tests.support.processes import finish, hold_migration_lock, start_alembic, waiting_migrations
from tests.support.revisions import FIRST, HEAD
from tests.support.roles import ROLE_PASSWORD, login_role
from tests.support.servers import fresh_database
from tests.support.sessions import Background

# The capture triggers on otel_traces and the helper tables in the search_path's schema.
MACHINERY = f"""
SELECT (SELECT count(*) FROM pg_trigger
        WHERE tgrelid = to_regclass(format('%%I.{TRACES_TABLE}', current_schema()))
          AND tgname = ANY(%(triggers)s)),
       (SELECT count(*) FROM pg_class
        WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
          AND relname = ANY(%(helpers)s))
"""
HELPERS = [DIRTY_TABLE, STATE_TABLE, STAGING_TABLE, NEXT]
INCREMENTAL_INSTALLED = (
    "incremental",
    len(incremental.triggers_for(incremental.PLAIN_STORE)),
    len(incremental.TABLES),
    HEAD,
)
NOTHING_INSTALLED = (None, 0, 0, FIRST)


def installed(database: Database) -> tuple:
    """(mode, capture triggers on otel_traces, helper tables, the version)."""
    params = {"triggers": [t.name for t in incremental.TRIGGERS], "helpers": HELPERS}
    with database.connect() as conn:
        machinery = conn.execute(MACHINERY, params).fetchone()
    return (database.mode(), *machinery, database.version())


# -- a downgrade never holds otel_traces while it waits ----------------------------------------
def downgrade_behind_a_reader(database: Database, report) -> None:
    """A downgrade that meets a reader fails, leaves everything, and no insert fails meanwhile."""
    install(database)
    database.execute(traces_sql("t", 100))
    with database.connect() as reader:
        reader.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone()  # a report, still open
        with Ingest(database.url) as ingest:
            result = database.alembic("-x", "lock_timeout=1s", "downgrade", "-1", check=False)
    assert_one_clear_line(result, "alembic: ", "lock timeout", "SQLSTATE 55P03")
    assert ingest.errors == []
    assert installed(database) == INCREMENTAL_INSTALLED
    report(ingest.describe("a downgrade that waited for a reader"))


def test_a_downgrade_that_meets_a_reader_fails_without_blocking_ingest(db, report):
    downgrade_behind_a_reader(db, report)
    db.migrate("downgrade", "-1")  # the reader is gone
    assert installed(db) == NOTHING_INSTALLED


def test_a_downgrade_that_meets_a_reader_keeps_the_job(cron_db, report):
    downgrade_behind_a_reader(cron_db, report)
    assert jobs_named(cron_db, cron_db.job_name) == {cron_db.job_name: 1}
    cron_db.migrate("downgrade", "-1")
    assert installed(cron_db) == NOTHING_INSTALLED
    assert jobs_named(cron_db, cron_db.job_name) == {cron_db.job_name: 0}


def test_a_downgrade_waits_for_a_running_refresh_before_it_locks_anything(db):
    install(db)
    with db.connect(autocommit=True) as refresher, Ingest(db.url) as ingest:
        # What a running refresh holds.
        refresher.execute(f"SELECT pg_advisory_lock({lock_key_sql(REFRESH_LOCK_CLASS)})")
        with pytest.raises(exc.OperationalError, match="lock timeout"):
            db.migrate("downgrade", "-1", x={"lock_timeout": "500ms"})
    assert ingest.errors == []
    assert installed(db) == INCREMENTAL_INSTALLED


# -- upgrading over what an interrupted install left --------------------------------------------
def test_removing_what_an_interrupted_install_left_never_blocks_ingest(db, report):
    db.migrate("upgrade", FIRST)
    db.execute(traces_sql("t", 70_000))  # 210,000 spans: a view build that takes a while
    install(db)
    # Incomplete (as an older release's interrupted run could leave it), so not kept.
    db.execute(f"DROP FUNCTION {incremental.APPLY.name}(timestamptz, timestamptz)")
    db.migrate("stamp", FIRST)
    with Ingest(db.url) as ingest:
        db.alembic("upgrade", "head")
    assert ingest.errors == []
    assert installed(db) == ("view", 0, 0, HEAD)
    report(ingest.describe("an upgrade that removed an interrupted install and built the view"))


# -- a failed install leaves nothing -----------------------------------------------------------
def test_an_incremental_install_whose_grant_fails_leaves_nothing(db):
    db.migrate("upgrade", FIRST)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE ROLE {role}")
    try:
        # The role is there when alembic checks the option, and gone by the GRANT.
        with hold_migration_lock(db, "the gate") as gate:
            run = start_alembic(db, "-x", "summaries=incremental", "-x", f"reader_role={role}",
                                "upgrade", "head")  # fmt: skip
            waiting_migrations(db, 1)
            db.execute(f"DROP ROLE {role}")
            gate.execute("SELECT pg_advisory_unlock_all()")
        assert_one_clear_line(finish(run), "alembic: ", f'role "{role}" does not exist')
    finally:
        db.execute(f"DROP ROLE IF EXISTS {role}")
    assert installed(db) == NOTHING_INSTALLED


def test_an_incremental_install_that_may_not_schedule_its_job_leaves_nothing(app_cron_db):
    app_cron_db.migrate("upgrade", FIRST)
    with pytest.raises(exc.DBAPIError, match="require_refresh=yes"):
        app_cron_db.migrate("upgrade", "head", x={**INCREMENTAL, "require_refresh": "yes"})
    assert installed(app_cron_db) == NOTHING_INSTALLED


@pytest.fixture
def app_beside_cron(cron_server) -> Iterator[Database]:
    """A database owned by a non-superuser, on the server whose pg_cron lives in another one."""
    with (
        login_role(cron_server) as role,
        fresh_database(cron_server, "app", owner=role) as name,
    ):
        yield Database(cron_server, name, user=role, password=ROLE_PASSWORD)


def test_an_incremental_install_that_may_not_schedule_its_job_elsewhere_leaves_nothing(
    app_beside_cron, cron_server
):
    app_beside_cron.migrate("upgrade", FIRST)
    x = {**INCREMENTAL, "require_refresh": "yes", "cron_database": cron_server.cron_database}
    with pytest.raises(SystemExit, match="require_refresh=yes"):
        app_beside_cron.migrate("upgrade", "head", x=x)
    assert installed(app_beside_cron) == NOTHING_INSTALLED


# -- TRUNCATE and the refresh ---------------------------------------------------------------------
def test_a_truncate_and_a_refresh_queued_behind_an_ingest_transaction_do_not_deadlock(db):
    install(db)
    db.execute(traces_sql("t", 20))
    with db.connect() as ingest:
        ingest.execute(traces_sql("open", 2))  # a collector's transaction, still open
        truncate = Background(db, lambda conn: conn.execute(f"TRUNCATE {TRACES_TABLE}"))
        truncate.wait_until_blocked(db)
        refresher = Background(db)
        refresher.wait_until_blocked(db)
        ingest.commit()
    truncate.join()
    outcome = refresher.join()  # it waited for the TRUNCATE, then read what it asked for
    assert (outcome["kind"], outcome["reason"]) == ("full", "otel_traces was truncated")
    with db.connect(autocommit=True) as conn:
        refresh(conn)
        assert_exact(conn)
        assert conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone() == (0,)


# -- any schema name ------------------------------------------------------------------------------
ODD_SCHEMA = 'o\'neil "x".y ü'


@pytest.fixture
def odd(db: Database) -> Database:
    """``db``, with a schema of that name first on every session's search_path."""
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(ODD_SCHEMA)))
    return Database(db.server, db.dbname, ODD_SCHEMA)


def test_a_schema_named_with_a_quote_a_dot_a_space_and_non_ascii_takes_both_modes(odd):
    odd.migrate("upgrade", "head", x=INCREMENTAL)
    assert odd.scalar("SELECT current_schema()") == ODD_SCHEMA
    assert installed(odd) == INCREMENTAL_INSTALLED
    odd.execute(traces_sql("t", 10))
    with odd.connect(autocommit=True) as conn:
        assert refresh(conn)["kind"] == "incremental"
        assert_exact(conn)
        assert refresh(conn, full=True)["kind"] == "full"
        assert_exact(conn)

    switch(odd, "view", check=True)
    odd.execute(traces_sql("v", 5))
    odd.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SUMMARIES}")
    assert odd.scalar(f"SELECT count(*) FROM {SUMMARIES}") == 15

    switch(odd, "incremental", check=True)
    odd.execute(traces_sql("i", 5))
    with odd.connect(autocommit=True) as conn:
        refresh(conn)
        assert_exact(conn)
        assert conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone() == (20,)

    odd.migrate("downgrade", "-1")
    assert installed(odd) == NOTHING_INSTALLED
    odd.migrate("upgrade", "head")
    assert installed(odd) == ("view", 0, 0, HEAD)
    odd.migrate("downgrade", "-1")
    assert installed(odd) == NOTHING_INSTALLED
    assert (
        odd.scalar(
            "SELECT count(*) FROM pg_class WHERE relnamespace = CAST('public' AS regnamespace)"
        )
        == 0
    )
