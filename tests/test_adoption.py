"""Adoption under load: an otel_traces that a collector created and fills, migrated as it is.

A module-scoped store per major version holds over a million spans in a
table with the collector's own index names, none leading with trace_id, so
adopting it means building ``idx_otel_traces_trace_id``. Every test runs
while :class:`~tests.support.data.Ingest` inserts spans one by one, each
with ``lock_timeout = 200ms``: a lock wait would fail an insert, and the
watcher would see it. The figures of each phase are reported.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cnpg_trace_summaries import contract
from tests.support.adoption import (
    COLLECTOR_INDEXES,
    MigrationWatcher,
    create_collector_store,
    definitions,
    indexes,
    is_ours,
    reset,
)
from tests.support.data import Ingest
from tests.support.database import Database, new_database
from tests.support.processes import finish, migration_backend, start_alembic, wait_until_gone

TRACES = 100_000  # ten spans each: one million spans
HEAD, FIRST = "00000000000007", "00000000000001"
TRACE_ID_INDEX = contract.TRACE_INDEXES_FOR_SUMMARIES[0][0]


@pytest.fixture(scope="module")
def collector_store(server) -> Iterator[tuple[Database, dict[str, str]]]:
    """The collector's store, and the definitions of its own indexes."""
    with new_database(server, "adopt") as database:
        create_collector_store(database, TRACES)
        assert database.scalar("SELECT count(*) FROM otel_traces") >= 1_000_000
        yield database, definitions(database)


@pytest.fixture
def store(collector_store) -> Iterator[Database]:
    """The collector's store as it was before this project came (every test leaves its mark)."""
    database, own = collector_store
    reset(database)
    assert set(indexes(database)) == set(COLLECTOR_INDEXES)
    assert definitions(database) == own
    yield database


def spans(database: Database) -> int:
    return database.scalar("SELECT count(*) FROM otel_traces")


def assert_ingest_never_waited(ingest: Ingest) -> None:
    assert ingest.errors == []
    assert ingest.lock_waits == []
    assert len(ingest.latencies) > 20


def assert_adopted(database: Database, own: dict[str, str], spans_before: int, ingest: Ingest):
    """Every span and collector index kept, ours built and marked, nothing invalid."""
    assert spans(database) == spans_before + len(ingest.trace_ids)
    assert definitions(database) == own
    found = indexes(database)
    assert [name for name, index in found.items() if not index["valid"]] == []
    assert set(found) == {*COLLECTOR_INDEXES, TRACE_ID_INDEX}
    assert is_ours(found[TRACE_ID_INDEX])
    assert not any(is_ours(found[name]) for name in COLLECTOR_INDEXES)


def test_upgrade_adopts_a_busy_store_without_failing_an_insert_and_keeps_its_spans_and_indexes(
    store: Database, collector_store, report
):
    own, before = collector_store[1], spans(store)
    with Ingest(store.url) as ingest, MigrationWatcher(store) as migration:
        store.alembic("upgrade", "head")
    report(ingest.describe("alembic upgrade head (adoption, then the view) over 1M spans"))

    assert_ingest_never_waited(ingest)
    assert migration.saw(f"CREATE INDEX CONCURRENTLY {TRACE_ID_INDEX}")
    assert_adopted(store, own, before, ingest)
    assert store.version() == HEAD


def test_ingest_never_waits_while_the_view_is_built_over_the_data_or_refreshed(
    store: Database, report
):
    store.migrate("upgrade", FIRST)
    with Ingest(store.url) as building:
        store.alembic("upgrade", "head")
    report(building.describe("CREATE MATERIALIZED VIEW over 1M spans (alembic upgrade head)"))
    with Ingest(store.url) as refreshing:
        store.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {contract.SUMMARIES}")
    report(refreshing.describe("REFRESH MATERIALIZED VIEW CONCURRENTLY over 1M spans"))

    for ingest in (building, refreshing):
        assert_ingest_never_waited(ingest)
    # The spans written while the view was built are in it after the refresh.
    assert store.scalar(
        f"SELECT count(*) FROM {contract.SUMMARIES} WHERE trace_id = ANY(%s)", (building.trace_ids,)
    ) == len(building.trace_ids)


def kill_when(database: Database, process, condition: str) -> int:
    """SIGKILL ``process`` once its backend matches ``condition``; wait for the server to notice."""
    pid = migration_backend(database, condition)[0]
    process.send_signal(signal.SIGKILL)
    process.wait()
    # client_connection_check_interval: without it the backend would go on (or wait) for good.
    wait_until_gone(database, pid)
    return pid


def test_a_killed_adoption_leaves_an_invalid_index_that_the_next_upgrade_rebuilds(
    store: Database, collector_store, report
):
    own, before = collector_store[1], spans(store)
    with Ingest(store.url) as ingest:
        # An old snapshot holds the build in its last phase, so the kill lands during it.
        with store.connect() as old_snapshot:
            old_snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            old_snapshot.execute("SELECT 1")
            upgrade = start_alembic(store, "upgrade", "head")
            kill_when(
                store,
                upgrade,
                f"query LIKE 'CREATE INDEX CONCURRENTLY {TRACE_ID_INDEX}%' "
                "AND wait_event = 'virtualxid'",
            )
        interrupted = indexes(store)[TRACE_ID_INDEX]
        assert interrupted["valid"] is False
        assert store.version() is None

        # Killed again while the view is built: revision 1 is recorded, the view is not there.
        upgrade = start_alembic(store, "upgrade", "head")
        kill_when(store, upgrade, "query LIKE 'CREATE MATERIALIZED VIEW%'")
        assert store.version() == FIRST
        assert store.scalar("SELECT to_regclass(%s)", (contract.SUMMARIES,)) is None

        store.alembic("upgrade", "head")
    report(ingest.describe("alembic upgrade head killed twice (index build, view), then again"))

    assert_ingest_never_waited(ingest)
    assert_adopted(store, own, before, ingest)
    assert indexes(store)[TRACE_ID_INDEX]["oid"] != interrupted["oid"]
    assert store.version() == HEAD


def test_downgrade_of_an_adopted_store_drops_only_the_indexes_this_project_built(
    store: Database, collector_store, report
):
    own = collector_store[1]
    store.migrate("upgrade", FIRST)
    before = spans(store)
    with Ingest(store.url) as ingest, MigrationWatcher(store) as migration:
        store.alembic("downgrade", "base")
    report(ingest.describe("alembic downgrade base of an adopted store"))

    assert_ingest_never_waited(ingest)
    assert migration.saw(f"DROP INDEX CONCURRENTLY IF EXISTS {store.schema}.{TRACE_ID_INDEX}")
    assert spans(store) == before + len(ingest.trace_ids)
    assert definitions(store) == own
    assert set(indexes(store)) == set(COLLECTOR_INDEXES)
    assert store.version() is None


def test_an_otel_traces_in_another_schema_on_the_search_path_is_not_adopted(db: Database):
    db.execute("CREATE SCHEMA other; CREATE SCHEMA mine")
    other = replace(db, schema="other")
    create_collector_store(other, 100)
    own = definitions(other)
    mine = replace(db, schema="mine,other")  # current_schema() is mine

    mine.migrate("upgrade", "head")
    assert db.scalar("SELECT to_regclass('mine.otel_traces')") is not None
    assert db.scalar("SELECT obj_description('mine.otel_traces'::regclass, 'pg_class')").find(
        contract.CREATED_MARKER
    ) >= 0
    assert mine.scalar(f"SELECT count(*) FROM {contract.SUMMARIES}") == 0
    assert definitions(other) == own
    assert set(indexes(other)) == set(COLLECTOR_INDEXES)
    assert other.scalar("SELECT count(*) FROM otel_traces") == 1000
