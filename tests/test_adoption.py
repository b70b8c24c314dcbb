"""Adoption under load: an otel_traces that a collector created and fills, migrated as it is.

A module-scoped store per major version holds over a million spans in a
table with the collector's own index names, none leading with trace_id, so
adopting it means building ``idx_otel_traces_trace_id``. As on CNPG, the
collector and the migration are the database's owner, not a superuser. Every test runs
while :class:`~tests.support.data.Ingest` inserts spans one by one, each
with ``lock_timeout = 200ms``: a lock wait would fail an insert, and the
watcher would see it. The figures of each phase are reported.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import pytest
from psycopg import sql

from cnpg_trace_summaries import contract
from tests.support.adoption import (
    COLLECTOR_INDEXES,
    COLLECTOR_TABLE_SQL,
    LOAD_SQL,
    MigrationWatcher,
    app_database,
    create_collector_store,
    definitions,
    indexes,
    is_ours,
    reset,
)
from tests.support.commands import assert_one_clear_line
from tests.support.data import Ingest
from tests.support.database import Database
from tests.support.processes import finish, migration_backend, start_alembic, wait_until_gone
from tests.support.revisions import FIRST, HEAD
from tests.support.servers import newest_major_only

TRACES = 100_000  # ten spans each: one million spans
TRACE_ID_INDEX = contract.TRACE_INDEXES_FOR_SUMMARIES[0][0]
# How the view's build shows in pg_stat_activity (its DO block says what it does).
BUILDS_THE_VIEW = "/* cnpg-trace-summaries: build the materialized view otel_trace_summaries"


@pytest.fixture(scope="module")
def collector_stores() -> Iterator[tuple[dict, ExitStack]]:
    """The module's stores, one per server, made on first use and kept to the module's end.

    Not a module-scoped fixture over ``server``: pytest would drop and load
    one again whenever the tests of two servers interleave on a worker.
    """
    with ExitStack() as stack:
        yield {}, stack


@pytest.fixture
def collector_store(server, collector_stores) -> tuple[Database, dict[str, str]]:
    """The collector's store on ``server``, and the definitions of its own indexes."""
    stores, stack = collector_stores
    key = server.url()
    if key not in stores:
        database = stack.enter_context(app_database(server))
        create_collector_store(database, TRACES)
        assert database.scalar("SELECT count(*) FROM otel_traces") >= 1_000_000
        stores[key] = database, definitions(database)
    return stores[key]


@pytest.fixture
def store(collector_store) -> Iterator[Database]:
    """The collector's store as it was before this project came (every test leaves its mark)."""
    database, own = collector_store
    reset(database)
    assert set(indexes(database)) == set(COLLECTOR_INDEXES)
    assert definitions(database) == own
    yield database


@contextmanager
def ingest_during(store: Database, report, what: str) -> Iterator[Ingest]:
    """A collector inserting into ``store`` for the block; its figures reported afterwards."""
    started = time.monotonic()
    with Ingest(store.url) as ingest:
        yield ingest
    report(f"{ingest.describe(what)}, over {time.monotonic() - started:.1f} s")


def spans(database: Database) -> int:
    return database.scalar("SELECT count(*) FROM otel_traces")


def assert_ingest_never_waited(ingest: Ingest) -> None:
    assert ingest.errors == []
    assert ingest.lock_waits == []
    assert len(ingest.latencies) > 20


def assert_adopted(database: Database, own: dict[str, str], spans_before: int, *ingests: Ingest):
    """Every span and collector index kept, ours built and marked, nothing invalid."""
    assert spans(database) == spans_before + sum(len(ingest.trace_ids) for ingest in ingests)
    assert definitions(database) == own
    found = indexes(database)
    assert [name for name, index in found.items() if not index["valid"]] == []
    assert set(found) == {*COLLECTOR_INDEXES, TRACE_ID_INDEX}
    assert is_ours(found[TRACE_ID_INDEX])
    assert not any(is_ours(found[name]) for name in COLLECTOR_INDEXES)


def test_upgrade_adopts_a_busy_store_and_ingest_never_waits_through_the_view_build_and_refresh(
    store: Database, collector_store, report
):
    own, before = collector_store[1], spans(store)
    upgrade = "alembic upgrade head over 1M spans (adoption, then the view)"
    with ingest_during(store, report, upgrade) as upgrading, MigrationWatcher(store) as migration:
        store.alembic("upgrade", "head")
    refresh = "REFRESH MATERIALIZED VIEW CONCURRENTLY over 1M spans"
    with ingest_during(store, report, refresh) as refreshing:
        store.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {contract.SUMMARIES}")

    for ingest in (upgrading, refreshing):
        assert_ingest_never_waited(ingest)
    assert migration.saw(f"CREATE INDEX CONCURRENTLY {TRACE_ID_INDEX}")
    assert migration.saw(BUILDS_THE_VIEW)
    assert_adopted(store, own, before, upgrading, refreshing)
    assert store.version() == HEAD
    # The spans written while the view was built are in it after the refresh.
    assert store.scalar(
        f"SELECT count(*) FROM {contract.SUMMARIES} WHERE trace_id = ANY(%s)",
        (upgrading.trace_ids,),
    ) == len(upgrading.trace_ids)


def kill_when(database: Database, process, condition: str) -> int:
    """SIGKILL ``process`` once its backend matches ``condition``; wait for the server to notice."""
    pid = migration_backend(database, condition)[0]
    process.send_signal(signal.SIGKILL)
    process.wait()
    # client_connection_check_interval: without it the backend would go on (or wait) for good.
    wait_until_gone(database, pid)
    return pid


# What a kill leaves is this project's doing, the same on every major: the newest only.
@newest_major_only
def test_an_upgrade_killed_during_the_index_build_or_the_view_is_repaired_by_upgrading_again(
    store: Database, collector_store, report
):
    own, before = collector_store[1], spans(store)
    what = "alembic upgrade head killed twice (index build, view), then upgrade head again"
    with ingest_during(store, report, what) as ingest:
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
        kill_when(store, upgrade, f"query LIKE '{BUILDS_THE_VIEW}%'")
        assert store.version() == FIRST
        assert (
            store.scalar(
                "SELECT count(*) FROM pg_class WHERE relname = ANY(%s)",
                ([contract.SUMMARIES, *contract.SUMMARY_INDEXES],),
            )
            == 0
        )

        store.migrate("upgrade", "head")

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
    with ingest_during(store, report, "alembic downgrade base of an adopted store") as ingest:
        # A reader's transaction holds the drop in its first wait, so it can be seen.
        with store.connect() as reader:
            reader.execute("SELECT 1 FROM otel_traces LIMIT 1")
            downgrade = start_alembic(store, "downgrade", "base")
            migration_backend(
                store,
                f"query LIKE 'DROP INDEX CONCURRENTLY IF EXISTS %{TRACE_ID_INDEX}' "
                "AND wait_event_type = 'Lock'",
            )
        result = finish(downgrade)

    assert result.returncode == 0, result.stderr
    assert_ingest_never_waited(ingest)
    assert spans(store) == before + len(ingest.trace_ids)
    assert definitions(store) == own
    assert set(indexes(store)) == set(COLLECTOR_INDEXES)
    assert store.version() is None


def test_an_otel_traces_in_another_schema_on_the_search_path_is_not_adopted(db: Database):
    db.execute("CREATE SCHEMA other; CREATE SCHEMA mine")
    other = replace(db, schema="other")
    create_collector_store(other, 100)
    own = definitions(other)
    mine = replace(db, schema=("mine", "other"))  # current_schema() is mine

    mine.migrate("upgrade", "head")
    assert db.scalar("SELECT to_regclass('mine.otel_traces')") is not None
    assert contract.CREATED_MARKER in db.scalar(
        "SELECT obj_description('mine.otel_traces'::regclass, 'pg_class')"
    )
    assert mine.scalar(f"SELECT count(*) FROM {contract.SUMMARIES}") == 0
    assert definitions(other) == own
    assert set(indexes(other)) == set(COLLECTOR_INDEXES)
    assert other.scalar("SELECT count(*) FROM otel_traces") == 1000


TIMESTAMP_INDEX = contract.TRACE_INDEXES_FOR_SUMMARIES[1][0]


@pytest.mark.parametrize(
    ("own", "built"),
    [
        (["(trace_id, span_id)", 'USING brin ("timestamp")'], set()),
        (["USING hash (trace_id)", '("timestamp" DESC)'], set()),
        (["USING brin (trace_id)", '("timestamp")'], {TRACE_ID_INDEX}),
        (["(trace_id) WHERE trace_id <> ''", '("timestamp")'], {TRACE_ID_INDEX}),
        (["(lower(trace_id))", '("timestamp")'], {TRACE_ID_INDEX}),
        (['(trace_id COLLATE "C")', '("timestamp")'], {TRACE_ID_INDEX}),
        (['(service_name, "timestamp")'], {TRACE_ID_INDEX, TIMESTAMP_INDEX}),
    ],
    ids=["btree-brin", "hash-btree", "brin", "partial", "expression", "collation", "neither"],
)
def test_adoption_builds_only_the_indexes_no_usable_index_already_serves(
    db: Database, own: list[str], built: set[str]
):
    db.execute(COLLECTOR_TABLE_SQL)
    for number, definition in enumerate(own):
        db.execute(f"CREATE INDEX own_{number} ON otel_traces {definition}")
    collector = definitions(db, [f"own_{number}" for number in range(len(own))])

    db.migrate("upgrade", FIRST)
    found = indexes(db)
    assert set(found) - set(collector) == built
    assert all(is_ours(found[name]) for name in built)
    assert definitions(db, collector) == collector

    db.migrate("downgrade", "base")
    assert definitions(db, indexes(db)) == collector


PARTITIONED_STORE_SQL = (
    COLLECTOR_TABLE_SQL.rstrip() + ' PARTITION BY RANGE ("timestamp")',
    # The collector's key leads with trace_id (it serves the summaries' lookups);
    # nothing leads with timestamp: the partitions prune the window instead.
    "ALTER TABLE otel_traces ADD CONSTRAINT spans_pkey "
    'PRIMARY KEY (trace_id, span_id, "timestamp")',
    *(
        f"CREATE TABLE otel_traces_{day} PARTITION OF otel_traces FOR VALUES "
        f"FROM (date_trunc('day', now()) - interval '{day} days') "
        f"TO (date_trunc('day', now()) - interval '{day - 1} days')"
        for day in range(7, -1, -1)
    ),
)


@pytest.mark.parametrize("schema", ["public", 'odd.name: "with" %s'], ids=["public", "odd-name"])
def test_a_partitioned_store_is_indexed_per_partition_concurrently_inserts_wait_only_on_its_parent(
    db: Database, report, schema
):
    if schema != "public":
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        db = replace(db, schema=schema)
    for statement in PARTITIONED_STORE_SQL:
        db.execute(statement)
    db.execute(LOAD_SQL.format(traces=20_000))
    spans_before = spans(db)
    with ingest_during(db, report, "adoption of a partitioned otel_traces") as ingest:
        db.alembic("upgrade", "head")
    # A partitioned table has no CREATE INDEX CONCURRENTLY: the index ON ONLY the
    # parent takes a SHARE lock on otel_traces, for a catalog-only statement. An
    # insert may wait for it (for nothing else), never past its own lock_timeout.
    assert ingest.errors == []
    assert set(ingest.lock_waits) <= {"relation otel_traces"}
    assert len(ingest.latencies) > 20
    assert spans(db) == spans_before + len(ingest.trace_ids)

    built = contract.TRACE_INDEXES_FOR_SUMMARIES[1][0]  # timestamp: the key serves trace_id
    parent = indexes(db)[built]
    assert parent["valid"] and is_ours(parent), parent
    per_partition = db.rows(
        "SELECT count(*) FILTER (WHERE i.indisvalid), count(*) FROM pg_inherits AS inh "
        "JOIN pg_index AS i ON i.indexrelid = inh.inhrelid WHERE inh.inhparent = %s",
        (parent["oid"],),
    )
    assert per_partition == [(8, 8)]
    assert contract.TRACE_INDEXES_FOR_SUMMARIES[0][0] not in indexes(db)
    assert db.scalar("SELECT count(*) FROM otel_trace_summaries") > 0

    # A partition made later (a partition manager's next day) gets its index by itself.
    db.execute(
        "CREATE TABLE otel_traces_next PARTITION OF otel_traces FOR VALUES "
        "FROM (date_trunc('day', now()) + interval '1 day') "
        "TO (date_trunc('day', now()) + interval '2 days')"
    )
    assert db.scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = %s", (parent["oid"],)) == 9

    db.migrate("downgrade", "base")
    assert built not in indexes(db)
    assert spans(db) == spans_before + len(ingest.trace_ids)


def test_a_store_whose_timestamp_has_no_time_zone_is_refused_with_one_line(db: Database):
    """Each session would read such a timestamp in its own TimeZone: the triggers in the
    collector's, the refresh in pg_cron's. Refused before anything changes."""
    db.execute('CREATE TABLE otel_traces ("timestamp" timestamp NOT NULL, trace_id text, '
               "span_id text, parent_span_id text, name text, kind int, start_time_unix_nano "
               "bigint, end_time_unix_nano bigint, service_name text, status_code int, "
               "status_message text)")  # fmt: skip
    result = db.alembic("upgrade", "head", check=False)
    assert_one_clear_line(
        result,
        'otel_traces in schema public cannot be adopted: its "timestamp" is timestamp without '
        "time zone",
        'ALTER COLUMN "timestamp" TYPE timestamptz',
    )
    assert db.version() is None
