"""The incremental mode on real PostgreSQL: concurrency, operations, writes bypassing triggers.

Every test ends with the proof of tests/support/incremental.py: the table
equals its definition at its own window boundary, at one snapshot
(``EXCEPT ALL`` both ways, 0 and 0), with no key left pending. The
exhaustive sequences of changes are in test_incremental_exactness.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from cnpg_trace_summaries import modes, summaries
from cnpg_trace_summaries.contract import (
    CAPTURE_TRIGGERS,
    DIRTY_TABLE,
    MODES,
    REFRESH_FUNCTION,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
)
from cnpg_trace_summaries.incremental_mode import STAGING_TABLE
from tests.support.commands import run_cli
from tests.support.cron import job_command, jobs_named
from tests.support.database import Database, new_database
from tests.support.incremental import (
    PARTITIONED_TRACES,
    assert_exact,
    compare,
    configure,
    dirty_keys,
    install,
    partition_of,
    refresh,
    traces_sql,
)
from tests.support.processes import wait_until_gone
from tests.support.revisions import FIRST, HEAD
from tests.support.roles import ROLE_PASSWORD, grant, login_role
from tests.support.sessions import Background


@pytest.fixture(scope="module")
def inc(server) -> Iterator[Database]:
    """A database with otel_traces and the summaries in incremental mode, for the module."""
    with new_database(server, "inc") as database:
        install(database)
        yield database


@pytest.fixture
def conn(inc: Database) -> Iterator[psycopg.Connection]:
    """A connection to ``inc``, emptied and with the refresh's default knobs."""
    with inc.connect(autocommit=True) as connection:
        connection.execute(f"TRUNCATE {TRACES_TABLE}")
        configure(connection, full_refresh_above=None, rows_per_rebuild_range=None)
        refresh(connection)
        assert_exact(connection)
        yield connection


def with_traces(conn: psycopg.Connection, prefix: str, traces: int, **kwargs) -> None:
    conn.execute(traces_sql(prefix, traces, **kwargs))
    refresh(conn)
    assert_exact(conn)


# -- blocking a refresh halfway, deterministically ------------------------------------
class RowLock:
    """Another session holding one summary row FOR UPDATE: a refresh that upserts it waits."""

    def __init__(self, database: Database, trace_id: str):
        self.conn = database.connect()
        self.conn.execute(
            f"SELECT 1 FROM {SUMMARIES} WHERE trace_id = %s FOR UPDATE", (trace_id,)
        ).fetchone()

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


# -- concurrency -------------------------------------------------------------------------
def test_a_transaction_open_across_a_refresh_is_applied_by_the_next_refresh(inc, conn):
    with_traces(conn, "t", 20)
    conn.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 't000001', 'x')"
    )
    with inc.connect() as writer:  # a transaction, left open across the refresh
        writer.execute(traces_sql("new", 3))
        writer.execute("DELETE FROM otel_traces WHERE trace_id = 't000002' AND span_id = 'span1'")
        writer.execute("UPDATE otel_traces SET name = 'renamed' WHERE trace_id = 't000001'")
        writer.execute("UPDATE otel_traces SET trace_id = 'moved' WHERE trace_id = 't000003'")
        refresh(conn)
        # The committed write is applied; the open transaction's are not visible yet.
        assert_exact(conn)
        assert conn.execute(
            "SELECT span_count FROM otel_trace_summaries WHERE trace_id = 't000001'"
        ).fetchone() == (4,)
        writer.commit()
    before = compare(conn, with_rows=False)
    assert before.pending > 0 and before.missing > 0
    refresh(conn)
    assert_exact(conn)
    names = dict(
        conn.execute("SELECT trace_id, root_span_name FROM otel_trace_summaries").fetchall()
    )
    assert names["t000001"] == "renamed" and "moved" in names and "t000003" not in names


def test_a_write_committed_while_a_refresh_runs_is_applied_by_the_next_refresh(inc, conn):
    with_traces(conn, "t", 20)
    conn.execute("UPDATE otel_traces SET status_code = 2 WHERE trace_id = 't000005'")
    lock = RowLock(inc, "t000005")
    running = Background(inc)
    try:
        running.wait_until_blocked(inc)  # past its snapshot, upserting t000005
        with inc.connect() as writer:
            writer.execute("UPDATE otel_traces SET name = 'during' WHERE trace_id = 't000005'")
            writer.execute(traces_sql("during", 2))
            writer.execute("DELETE FROM otel_traces WHERE trace_id = 't000006'")
            writer.commit()
    finally:
        lock.release()
    assert running.join()["refreshed"]
    after_first = compare(conn, with_rows=False)
    assert after_first.pending > 0, "the writes committed during the refresh were claimed"
    refresh(conn)
    assert_exact(conn)
    assert conn.execute(
        "SELECT root_span_name, error_count FROM otel_trace_summaries WHERE trace_id = 't000005'"
    ).fetchone() == ("during", 3)


def test_two_refreshers_at_once_one_skips_and_the_data_stays_exact(inc, conn):
    with_traces(conn, "t", 20)
    conn.execute("UPDATE otel_traces SET kind = 5 WHERE trace_id IN ('t000007', 't000008')")
    lock = RowLock(inc, "t000007")
    first = Background(inc)
    try:
        first.wait_until_blocked(inc)
        second = refresh(conn)
        assert second == {"refreshed": False, "reason": "another refresher holds the lock"}
        with inc.connect(autocommit=True) as other:
            outcome = summaries.refresh(other)
        assert (outcome.refreshed, outcome.reason) == (False, "another refresher holds the lock")
    finally:
        lock.release()
    assert first.join()["refreshed"]
    assert_exact(conn)
    assert refresh(conn)["refreshed"]  # the lock was released with the first one's commit


def test_a_refresh_neither_waits_for_writers_holding_row_locks_nor_loses_their_keys(inc, conn):
    with_traces(conn, "t", 20)
    conn.execute("SET lock_timeout = '100ms'")  # a refresh that waited would fail
    with inc.connect() as writer:
        writer.execute("UPDATE otel_traces SET name = 'held' WHERE trace_id = 't000009'")
        writer.execute("DELETE FROM otel_traces WHERE trace_id = 't000010'")
        writer.execute(traces_sql("held", 2))
        conn.execute("UPDATE otel_traces SET status_code = 1 WHERE trace_id = 't000011'")
        assert refresh(conn)["refreshed"]
        assert_exact(conn)
        writer.commit()
    refresh(conn)
    assert_exact(conn)
    assert conn.execute(
        "SELECT count(*) FROM otel_trace_summaries WHERE trace_id LIKE 'held%' "
        "OR root_span_name = 'held' OR trace_id = 't000010'"
    ).fetchone() == (3,)


# -- operations -----------------------------------------------------------------------------
def test_truncate_flags_a_full_rebuild_and_the_next_refresh_empties_the_summaries(inc, conn):
    with_traces(conn, "t", 30)
    conn.execute("TRUNCATE otel_traces")
    assert conn.execute(f"SELECT rebuild_requested FROM {STATE_TABLE}").fetchone() == (
        "otel_traces was truncated",
    )
    outcome = refresh(conn)
    assert (outcome["kind"], outcome["reason"]) == ("full", "otel_traces was truncated")
    assert conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone() == (0,)
    assert_exact(conn)


def several_ranges(conn: psycopg.Connection, traces: int = 300) -> None:
    """Traces, and a range size that splits a full rebuild of them into three ranges."""
    conn.execute(traces_sql("r", traces))
    configure(conn, rows_per_rebuild_range=traces // 3)


def test_refresh_full_rebuilds_in_several_committed_ranges(inc, conn):
    several_ranges(conn)
    refresh(conn)
    conn.execute(f"DELETE FROM {SUMMARIES}")  # damage that no trigger saw

    result = run_cli("refresh", "--full", "--json", DATABASE_URL=inc.url)
    assert result.returncode == 0, result.stderr
    detail = json.loads(result.stdout)["detail"]
    assert (detail["kind"], detail["reason"], detail["ranges"]) == ("full", "asked for", 3)
    # Each range was committed by a transaction of its own.
    assert conn.execute(
        f"SELECT count(DISTINCT CAST(xmin AS text)) FROM {SUMMARIES}"
    ).fetchone() == (detail["ranges"],)
    assert_exact(conn)


def test_a_backlog_above_full_refresh_above_falls_back_to_a_full_rebuild(inc, conn):
    several_ranges(conn)
    refresh(conn)
    configure(conn, full_refresh_above=10)
    conn.execute("UPDATE otel_traces SET status_code = 2 WHERE trace_id <= 'r000050'")
    outcome = refresh(conn)
    assert outcome["kind"] == "full", outcome
    assert outcome["reason"].startswith("a backlog of about 50 traces (full refresh above 10)")
    assert outcome["ranges"] == 3
    assert_exact(conn)
    conn.execute("UPDATE otel_traces SET status_code = 0 WHERE trace_id <= 'r000005'")
    assert refresh(conn)["kind"] == "incremental"  # below the threshold again
    assert_exact(conn)


def test_a_full_rebuild_interrupted_halfway_is_finished_by_the_next_refresh(inc, conn):
    several_ranges(conn)
    refresh(conn)
    conn.execute("UPDATE otel_traces SET name = name || '!'")  # every trace changes
    lock = RowLock(inc, "r000300")  # in the last range
    try:
        with inc.connect(autocommit=True) as refresher:
            refresher.execute("SET lock_timeout = '200ms'")
            pid = refresher.info.backend_pid
            with pytest.raises(psycopg.errors.LockNotAvailable):
                refresh(refresher, full=True)
    finally:
        lock.release()
    # Its session held the refresh lock until it ended (a procedure that commits cannot catch).
    wait_until_gone(inc, pid)
    rewritten = conn.execute(
        f"SELECT count(*) FILTER (WHERE root_span_name LIKE '%!') FROM {SUMMARIES}"
    ).fetchone()[0]
    assert 0 < rewritten < 300  # halfway: the earlier ranges are committed, the last is not

    outcome = refresh(conn)
    assert outcome["kind"] == "full", outcome
    assert_exact(conn)


def test_an_ingest_role_with_only_insert_update_delete_can_write_after_install(inc, conn):
    with login_role(inc.server, "ingest", databases=(inc.dbname,)) as role:
        grant(inc.server, inc.dbname, "GRANT INSERT, UPDATE, DELETE ON otel_traces TO {}", role)
        with inc.as_role(role, ROLE_PASSWORD).connect(autocommit=True) as ingest:
            ingest.execute(traces_sql("gone", 3))
            ingest.execute("DELETE FROM otel_traces")  # no WHERE: no SELECT privilege needed
            ingest.execute(traces_sql("i", 5))
            ingest.execute("UPDATE otel_traces SET status_code = 2")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ingest.execute(f"SELECT 1 FROM {DIRTY_TABLE}")
    assert dirty_keys(conn) > 0
    refresh(conn)
    assert_exact(conn)
    assert conn.execute(f"SELECT count(*), sum(error_count) FROM {SUMMARIES}").fetchone() == (5, 15)


def test_spans_older_than_the_window_boundary_add_no_dirty_keys(inc, conn):
    conn.execute(traces_sql("old", 50, age="8 days"))
    conn.execute("UPDATE otel_traces SET status_code = 2 WHERE trace_id LIKE 'old%'")
    assert dirty_keys(conn) == 0
    conn.execute("DELETE FROM otel_traces WHERE timestamp < now() - interval '7 days'")  # retention
    assert dirty_keys(conn) == 0
    conn.execute(traces_sql("new", 2))
    assert dirty_keys(conn) == 2
    refresh(conn)
    assert_exact(conn)


def test_columns_of_an_adopted_otel_traces_never_clash_with_the_refresh_variables(db):
    db.migrate("upgrade", FIRST)
    # Columns named like the variables of the trigger and refresh functions.
    db.execute(
        "ALTER TABLE otel_traces ADD COLUMN boundary text, ADD COLUMN previous text, "
        "ADD COLUMN low text, ADD COLUMN high text, ADD COLUMN new_boundary text"
    )
    db.execute(traces_sql("a", 10))
    install(db)
    with db.connect(autocommit=True) as conn:
        conn.execute(traces_sql("b", 10))
        conn.execute("UPDATE otel_traces SET name = 'x' WHERE trace_id = 'a000001'")
        conn.execute("DELETE FROM otel_traces WHERE trace_id = 'a000002'")
        assert refresh(conn)["kind"] == "incremental"
        assert_exact(conn)
        assert refresh(conn, full=True)["kind"] == "full"
        assert_exact(conn)


# -- a partitioned otel_traces: writes that bypass the triggers ------------------------------
@pytest.fixture
def partitioned(db: Database) -> Iterator[psycopg.Connection]:
    """A collector's otel_traces partitioned by day, adopted, summaries in incremental mode."""
    db.execute(PARTITIONED_TRACES)
    install(db)
    with db.connect(autocommit=True) as connection:
        yield connection


def test_writes_through_a_partitioned_parent_are_captured(db, partitioned):
    conn = partitioned
    conn.execute(traces_sql("p", 10, age="3 days"))
    conn.execute(traces_sql("q", 10, age="1 minute"))
    # Moves spans to another partition, and one trace out of the window.
    move = "UPDATE otel_traces SET timestamp = timestamp - CAST(%s AS interval) WHERE trace_id "
    conn.execute(move + "< 'p000005'", ("1 day",))
    conn.execute(move + "= 'p000009'", ("5 days",))
    conn.execute("DELETE FROM otel_traces WHERE trace_id = 'q000003'")
    assert dirty_keys(conn) > 0
    refresh(conn)
    assert_exact(conn)
    assert conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone() == (18,)


def test_detaching_and_dropping_a_partition_older_than_the_window_needs_nothing(db, partitioned):
    conn = partitioned
    old = partition_of(conn, "now() - interval '8 days 12 hours'")
    conn.execute(traces_sql("old", 10, age="8 days 12 hours"))
    conn.execute(traces_sql("new", 10, age="2 hours"))
    conn.execute(  # a trace with spans on both sides of the boundary
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) "
        "VALUES (now() - interval '8 days 12 hours', 'new000001', 'older')"
    )
    refresh(conn)
    assert_exact(conn)

    conn.execute(f"ALTER TABLE otel_traces DETACH PARTITION {old}")
    conn.execute(f"DROP TABLE {old}")
    assert dirty_keys(conn) == 0
    assert_exact(conn)  # exact as it is, before any refresh
    refresh(conn)
    assert_exact(conn)


def test_writes_that_bypass_the_triggers_are_found_by_verify_and_repaired_by_a_full_refresh(
    db, partitioned
):
    conn = partitioned
    conn.execute(traces_sql("p", 10, age="2 days"))
    conn.execute(traces_sql("q", 10, age="1 hour"))
    refresh(conn)
    assert run_cli("verify", DATABASE_URL=db.url).returncode == 0

    today = partition_of(conn, "now()")
    two_days_ago = partition_of(conn, "now() - interval '2 days'")
    # A direct insert into a partition, and a partition in the window detached:
    # neither fires the parent's triggers.
    conn.execute(
        f"INSERT INTO {today} (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'direct', 'root', 'bypassed'), (now(), 'q000001', 'extra', 'bypassed')"
    )
    conn.execute(f"ALTER TABLE otel_traces DETACH PARTITION {two_days_ago}")
    assert dirty_keys(conn) == 0

    verified = run_cli("verify", DATABASE_URL=db.url)
    assert verified.returncode == 2, verified.stderr
    assert "DIFFERS" in verified.stdout.splitlines()[0]
    assert "  missing direct" in verified.stdout.splitlines()

    repaired = run_cli("refresh", "--full", DATABASE_URL=db.url)
    assert repaired.returncode == 0, repaired.stderr
    assert "rebuilt everything in" in repaired.stdout
    assert run_cli("verify", DATABASE_URL=db.url).returncode == 0
    assert_exact(conn)


# -- the console command -------------------------------------------------------------------
def test_verify_says_exact_or_differs_with_exit_status_and_json(inc, conn):
    with_traces(conn, "t", 10)
    result = run_cli("verify", DATABASE_URL=inc.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("otel_trace_summaries: EXACT: 10 rows compared")

    conn.execute(f"UPDATE {SUMMARIES} SET span_count = 99 WHERE trace_id = 't000004'")
    conn.execute(f"DELETE FROM {SUMMARIES} WHERE trace_id = 't000005'")
    conn.execute(traces_sql("pending", 1))  # queued, left out of the comparison
    result = run_cli("verify", "--json", DATABASE_URL=inc.url)
    assert result.returncode == 2, result.stderr
    payload = json.loads(result.stdout)
    assert payload["mode"] == "incremental" and payload["exact"] is False
    assert (payload["missing"], payload["unexpected"], payload["pending_keys"]) == (2, 1, 1)
    assert sorted(payload["examples"]) == [
        "missing t000004",
        "missing t000005",
        "unexpected t000004",
    ]


def test_verify_reports_disabled_capture_triggers_and_the_writes_they_missed(inc, conn):
    with_traces(conn, "t", 5)
    # A logical replication apply (session_replication_role = replica) fires no
    # ordinary trigger: its writes are not captured.
    conn.execute("SET session_replication_role = replica")
    conn.execute(traces_sql("replica", 2))
    conn.execute("RESET session_replication_role")
    assert dirty_keys(conn) == 0
    name = CAPTURE_TRIGGERS["INSERT"]
    conn.execute(f"ALTER TABLE {TRACES_TABLE} DISABLE TRIGGER {name}")
    try:
        result = summaries.verify(conn)
    finally:
        conn.execute(f"ALTER TABLE {TRACES_TABLE} ENABLE TRIGGER {name}")
    assert not result.exact
    assert f"trigger(s) {name} missing or disabled (2 missing, 0 unexpected" in result.note

    assert summaries.refresh(conn, full=True).refreshed
    assert summaries.verify(conn).exact


def test_status_reports_the_mode_the_backlog_and_the_last_refresh(inc, conn):
    with_traces(conn, "t", 10)
    conn.execute(traces_sql("queued", 4))
    result = run_cli("status", "--json", DATABASE_URL=inc.url)
    payload = json.loads(result.stdout)
    assert payload["mode"] == "incremental"
    state = payload["incremental"]
    assert state["backlog"] == 4
    assert state["last_refresh_kind"] == "incremental"
    assert state["last_refresh_at"] is not None
    assert state["window_boundary"] is not None
    text = run_cli("status", DATABASE_URL=inc.url).stdout
    assert "(incremental mode)" in text
    assert "backlog            4 changed trace ids queued" in text


def test_status_is_not_ok_while_a_capture_trigger_is_disabled(inc, conn):
    name = CAPTURE_TRIGGERS["DELETE"]
    conn.execute(f"ALTER TABLE {TRACES_TABLE} DISABLE TRIGGER {name}")
    try:
        result = run_cli("status", "--json", DATABASE_URL=inc.url)
    finally:
        conn.execute(f"ALTER TABLE {TRACES_TABLE} ENABLE TRIGGER {name}")
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(f"{name} missing or disabled" in problem for problem in problems), problems


# -- downgrade ------------------------------------------------------------------------------
LEFTOVERS = f"""
SELECT (SELECT count(*) FROM pg_class
        WHERE relnamespace = CAST(current_schema() AS regnamespace)
          AND relname IN ('{SUMMARIES}', '{DIRTY_TABLE}', '{STATE_TABLE}', '{STAGING_TABLE}')),
       (SELECT count(*) FROM pg_trigger WHERE tgname = ANY(%(triggers)s)),
       (SELECT count(*) FROM pg_proc
        WHERE pronamespace = CAST(current_schema() AS regnamespace)
          AND proname LIKE 'otel_trace_summaries%%')
"""


def test_downgrade_removes_everything_and_upgrading_again_works(db):
    install(db)
    with db.connect(autocommit=True) as conn:
        with_traces(conn, "t", 10)
        triggers = list(CAPTURE_TRIGGERS.values())
        assert conn.execute(LEFTOVERS, {"triggers": triggers}).fetchone() == (4, 4, 6)

        db.migrate("downgrade", "-1")
        assert conn.execute(LEFTOVERS, {"triggers": triggers}).fetchone() == (0, 0, 0)
        assert db.version() == FIRST
        assert conn.execute("SELECT count(*) FROM otel_traces").fetchone() == (30,)

        install(db)
        assert conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone() == (10,)
        conn.execute(traces_sql("again", 2))
        refresh(conn)
        assert_exact(conn)


def test_downgrade_unschedules_the_incremental_job(cron_db: Database):
    install(cron_db)
    name = cron_db.job_name
    command = job_command(cron_db, name)
    assert command == f"CALL {cron_db.schema}.{REFRESH_FUNCTION}()"
    cron_db.migrate("downgrade", "-1")
    assert jobs_named(cron_db, name) == {name: 0}


@pytest.mark.parametrize("left_by", MODES)
@pytest.mark.parametrize("upgraded_to", MODES)
def test_what_an_interrupted_install_left_is_rebuilt_by_upgrading_again(db, left_by, upgraded_to):
    # As if the upgrade died after committing its objects but before its version row.
    db.migrate("upgrade", "head", x={"summaries": left_by})
    db.migrate("stamp", FIRST)
    notices = db.migrate("upgrade", "head", x={"summaries": upgraded_to})
    assert "left by an interrupted run" in notices
    assert db.version() == HEAD
    with db.connect(autocommit=True) as conn:
        assert modes.installed(conn) == upgraded_to
        triggers = list(CAPTURE_TRIGGERS.values())
        everything = (4, 4, 6) if upgraded_to == "incremental" else (1, 0, 0)
        assert conn.execute(LEFTOVERS, {"triggers": triggers}).fetchone() == everything
        conn.execute(traces_sql("after", 3))
        if upgraded_to == "incremental":
            refresh(conn)
            assert_exact(conn)
        else:
            conn.execute(f"REFRESH MATERIALIZED VIEW {SUMMARIES}")
            assert conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone() == (3,)
