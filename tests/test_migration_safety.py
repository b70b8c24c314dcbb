"""Migrating where others work too: other migrators, a held lock, a refresh, an app's Alembic."""

from __future__ import annotations

import time

import pytest

from cnpg_trace_summaries import contract, migrating
from tests.support.adoption import COLLECTOR_TABLE_SQL, LOAD_SQL
from tests.support.commands import assert_one_clear_line
from tests.support.database import Database
from tests.support.processes import (
    finish,
    hold_migration_lock,
    start_alembic,
    wait_for,
    waiting_migrations,
)
from tests.support.revisions import FIRST, HEAD
from tests.support.servers import local_server

REFRESH_OFF = "automatic refresh of otel_trace_summaries is OFF"


def version_rows(database: Database) -> list[tuple]:
    return database.rows(f"SELECT version_num FROM {contract.VERSION_TABLE}")


def has_summaries(database: Database) -> bool:
    return database.scalar("SELECT to_regclass(%s) IS NOT NULL", (contract.SUMMARIES,))


def jobs(cron: Database, name: str, database: str) -> int:
    """The jobs named ``name`` for ``database`` in the cron.job of ``cron``."""
    return cron.scalar(
        "SELECT count(*) FROM cron.job WHERE jobname = %s AND database = %s", (name, database)
    )


def upgrade_twice_at_once(database: Database, while_waiting=lambda: None) -> None:
    """Two ``alembic upgrade head`` from base, made to overlap: both wait at the gate first
    (``while_waiting`` runs then)."""
    with hold_migration_lock(database, "the gate"):
        runs = [start_alembic(database, "upgrade", "head") for _ in range(2)]
        waiting_migrations(database, 2)
        while_waiting()
    results = [finish(run) for run in runs]
    assert [result.returncode for result in results] == [0, 0], [r.stderr for r in results]
    assert version_rows(database) == [(HEAD,)]


# -- one migrator at a time --------------------------------------------------------------
def test_two_upgrades_started_together_both_succeed_with_one_version_row(db: Database):
    upgrade_twice_at_once(db)
    assert has_summaries(db)


def test_two_upgrades_started_together_schedule_one_job(cron_db: Database):
    upgrade_twice_at_once(cron_db)
    assert jobs(cron_db, cron_db.job_name, cron_db.dbname) == 1


# Migrators waiting for the migration lock, seen from pg_stat_activity, that are blocked on
# a lock, hold a transaction id, or are in a transaction for a second: any of them would make
# the other's CREATE INDEX CONCURRENTLY wait for it while it waits for that one.
HOLDING_WAITERS_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = %s
  AND (wait_event_type = 'Lock' OR backend_xid IS NOT NULL
       OR xact_start < clock_timestamp() - interval '1 second')
"""


def never_holding(database: Database, looks: int = 50) -> None:
    """``looks`` looks, 20 ms apart, find no waiting migrator that holds what an index build
    would wait for."""
    with database.connect(autocommit=True) as conn:
        for _ in range(looks):
            holding = conn.execute(HOLDING_WAITERS_SQL, (migrating.WAITING_APPLICATION_NAME,))
            assert holding.fetchone() == (0,)
            time.sleep(0.02)


def test_two_upgrades_started_together_over_a_store_that_needs_indexes_never_deadlock(
    db: Database,
):
    """The first builds indexes concurrently, which waits for every older transaction; the
    second, waiting for the migration lock, holds none (it tries the lock between short
    transactions), so the build never waits for it, and both end well.

    The ordering is proved, not left to chance: both wait at a gate first, and while they
    wait, 50 looks at them never find one blocked on a lock or in a lasting transaction,
    which is how the one that gets the lock next finds the other while it builds."""
    with db.connect(autocommit=True) as conn:
        conn.execute(COLLECTOR_TABLE_SQL)
        conn.execute(LOAD_SQL.format(traces=5_000))  # 50,000 spans, no index at all
    upgrade_twice_at_once(db, while_waiting=lambda: never_holding(db))
    assert has_summaries(db)
    assert db.scalar(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'otel_traces'::regclass AND indisvalid"
    ) == len(contract.TRACE_INDEXES_FOR_SUMMARIES)


def test_a_migrator_that_waits_longer_than_migration_lock_wait_names_the_holder_and_changes_nothing(
    db: Database,
):
    with hold_migration_lock(db, "schema-holder") as holder:
        result = db.alembic("-x", "migration_lock_wait=1s", "upgrade", "head", check=False)
        assert_one_clear_line(
            result,
            "held the migration lock for longer than 1s",
            f"pid {holder.info.backend_pid}",
            "schema-holder",
        )
    assert db.scalar("SELECT to_regclass(%s)", (contract.VERSION_TABLE,)) is None
    assert db.scalar("SELECT to_regclass('otel_traces')") is None


def test_a_waiting_migration_shows_its_application_name_then_finds_nothing_left_to_do(
    db: Database,
):
    """It waits between short transactions, holding no snapshot: a concurrent index build of
    the first migrator, which waits for older snapshots, never waits for it."""
    db.migrate("upgrade", "head")
    with hold_migration_lock(db, "first-migrator"):
        waiting = start_alembic(db, "upgrade", "head")
        waiting_migrations(db, 1)
        backend = wait_for(
            db,
            "SELECT state, backend_xmin, query FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s AND state = 'idle'",
            (db.dbname, migrating.WAITING_APPLICATION_NAME),
            what="the waiting migration between two tries",
        )
    result = finish(waiting)
    assert backend[1] is None  # no snapshot held
    assert backend[2] == "COMMIT"  # the end of its last try
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" not in result.stderr
    assert version_rows(db) == [(HEAD,)]


# -- an application's own Alembic history ------------------------------------------------------
def test_an_applications_own_alembic_version_is_left_untouched(db: Database):
    db.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    db.execute("INSERT INTO alembic_version VALUES ('a1b2c3d4e5f6')")

    db.migrate("upgrade", "head")
    assert db.rows("SELECT version_num FROM alembic_version") == [("a1b2c3d4e5f6",)]
    assert version_rows(db) == [(HEAD,)]

    db.migrate("downgrade", "base")
    assert db.rows("SELECT version_num FROM alembic_version") == [("a1b2c3d4e5f6",)]
    assert version_rows(db) == []


# -- a downgrade that meets a refresh ------------------------------------------------------------
def refresh_holding_its_lock(database: Database):
    """A connection whose open transaction ran the concurrent refresh (and keeps its lock)."""
    conn = database.connect()
    conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {contract.SUMMARIES}")
    return conn


def assert_downgrade_fails_then_succeeds(app: Database, cron: Database) -> None:
    """Downgrade while a refresh holds its lock: it fails, the view and job stay; then it works."""
    app.migrate("upgrade", "head")
    job = app.job_name
    assert jobs(cron, job, app.dbname) == 1

    with refresh_holding_its_lock(app):
        result = app.alembic("-x", "lock_timeout=500ms", "downgrade", "-1", check=False)
    assert_one_clear_line(result, "lock timeout")
    assert has_summaries(app)
    assert jobs(cron, job, app.dbname) == 1
    assert app.version() == HEAD

    app.migrate("downgrade", "-1")
    assert not has_summaries(app)
    assert jobs(cron, job, app.dbname) == 0
    assert app.version() == FIRST


def test_a_downgrade_that_meets_a_refresh_fails_with_the_job_still_scheduled(cron_db: Database):
    assert_downgrade_fails_then_succeeds(cron_db, cron_db)


def test_a_downgrade_that_meets_a_refresh_leaves_the_job_in_pg_crons_other_database(cron_server):
    cron_database = contract.DEFAULT_CRON_DATABASE
    with local_server(
        "cron-in-postgres", cron_server.install, pg_cron_database=cron_database
    ) as cluster:
        cluster.create_database("app")
        assert_downgrade_fails_then_succeeds(
            Database(cluster, "app"), Database(cluster, cron_database)
        )


# -- a missing refresher you cannot miss -----------------------------------------------------------
@pytest.mark.parametrize("how", ["-x", "environment"])
def test_require_refresh_fails_the_upgrade_without_pg_cron_and_changes_nothing(
    nocron_db: Database, how
):
    nocron_db.migrate("upgrade", FIRST)
    if how == "-x":
        result = nocron_db.alembic("-x", "require_refresh=yes", "upgrade", "head", check=False)
    else:
        result = nocron_db.alembic(
            "upgrade", "head", check=False, TRACE_SUMMARIES_REQUIRE_REFRESH="yes"
        )
    assert_one_clear_line(result, "require_refresh=yes", "pg_cron")
    assert nocron_db.version() == FIRST
    assert not has_summaries(nocron_db)


def test_require_refresh_upgrades_where_pg_cron_is(cron_db: Database):
    result = cron_db.alembic("-x", "require_refresh=yes", "upgrade", "head")
    assert REFRESH_OFF not in result.stderr
    assert cron_db.version() == HEAD
    assert jobs(cron_db, cron_db.job_name, cron_db.dbname) == 1


def test_the_refresh_is_off_notice_is_a_warning_on_the_command_line(nocron_db: Database):
    result = nocron_db.alembic("upgrade", "head")
    off = [line for line in result.stderr.splitlines() if REFRESH_OFF in line]
    assert len(off) == 1, result.stderr
    assert off[0].startswith("WARNING")
