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

from cnpg_trace_summaries import summaries
from cnpg_trace_summaries.contract import (
    CAPTURE_ROW_TRIGGERS,
    CAPTURE_TRIGGERS,
    DIRTY_TABLE,
    MODES,
    REBUILD_PROCEDURE,
    REFRESH_FUNCTION,
    STAGING_TABLE,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
)
from cnpg_trace_summaries.sql import incremental
from tests.support.commands import run_cli
from tests.support.cron import job_command, jobs_named
from tests.support.database import Database, new_database
from tests.support.incremental import (
    PARTITIONED_TRACES,
    assert_exact,
    compare,
    configure,
    dirty_keys,
    here,
    install,
    partition_of,
    refresh,
    traces_sql,
)
from tests.support.processes import wait_for, wait_until_gone
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
        assert second["refreshed"] is False
        assert second["reason"] == f"another refresher (pid {first.pid}) holds the lock"
        with inc.connect(autocommit=True) as other:
            outcome = summaries.refresh(here(other))
        assert (outcome.refreshed, outcome.reason) == (False, second["reason"])
    finally:
        lock.release()
    assert first.join()["refreshed"]
    assert_exact(conn)
    assert refresh(conn)["refreshed"]  # the lock was released with the first one's commit


CLAIM_SQL = f"""
UPDATE {STATE_TABLE} SET rebuilding_pid = a.pid, rebuilding_since = a.query_start
FROM pg_stat_activity AS a WHERE a.pid = %s
"""


def test_between_the_transactions_of_a_full_rebuild_its_claim_keeps_other_refreshers_off(inc, conn):
    """A full rebuild holds the refresh lock only inside each of its transactions; the
    claim it leaves in the state row holds while its statement runs, and no longer."""
    with_traces(conn, "t", 20)
    conn.execute("UPDATE otel_traces SET kind = 5 WHERE trace_id = 't000003'")
    sleeper = Background(inc, lambda c: c.execute("SELECT pg_sleep(60)"))
    try:
        running = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND query LIKE '%%pg_sleep%%'"
        wait_for(inc, f"{running} AND state = 'active'", (sleeper.pid,), what="the sleep")
        conn.execute(CLAIM_SQL, (sleeper.pid,))
        outcome = refresh(conn)
        assert (outcome["refreshed"], outcome["reason"]) == (
            False, f"a full rebuild (pid {sleeper.pid}) is running"
        )  # fmt: skip
        assert refresh(conn, full=True)["reason"] == outcome["reason"]
        with pytest.raises(
            psycopg.errors.LockNotAvailable, match=f"by pid {sleeper.pid} is running"
        ):
            conn.execute(f"CALL {REBUILD_PROCEDURE}('{SUMMARIES}', 'asked', NULL)")
        assert compare(conn, with_rows=False).pending == 1  # nothing was claimed
    finally:
        inc.execute("SELECT pg_cancel_backend(%s)", (sleeper.pid,))
        sleeper.wait()
    # The statement ended (its session lives on, idle): the claim is stale.
    assert refresh(conn)["refreshed"]
    assert_exact(conn)
    sleeper.conn.close()


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
    # The backlog is counted up to the threshold, never further: a bounded read.
    assert outcome["reason"].startswith("a backlog of about 11 traces (full refresh above 10)")
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


def test_a_loaded_table_attached_as_a_partition_is_captured_by_the_next_refresh(db, partitioned):
    """A bulk load: fill a table, then ATTACH PARTITION it. No trigger fires for its rows; the
    refresh sees a new leaf of otel_traces and recomputes the traces it holds."""
    conn = partitioned
    conn.execute(traces_sql("p", 10, age="1 hour"))
    refresh(conn)
    conn.execute("CREATE TABLE loaded (LIKE otel_traces INCLUDING DEFAULTS)")
    conn.execute(
        "INSERT INTO loaded (timestamp, trace_id, span_id, parent_span_id, name, service_name) "
        "SELECT current_date + 2 + g * interval '1 minute', trace_id, 'bulk' || g, NULL, 'bulk', "
        "'loader' FROM (VALUES ('p000001'), ('p000002'), ('bulk1')) AS t(trace_id), "
        "generate_series(1, 3) AS g"
    )
    conn.execute(
        "ALTER TABLE otel_traces ATTACH PARTITION loaded "
        "FOR VALUES FROM (current_date + 2) TO (current_date + 3)"
    )
    assert dirty_keys(conn) == 0
    verified = run_cli("verify", "--json", DATABASE_URL=db.url)
    assert json.loads(verified.stdout)["pending_keys"] >= 3  # its traces, queued as it were
    assert refresh(conn)["kind"] == "incremental"
    assert_exact(conn)
    assert conn.execute(
        f"SELECT span_count FROM {SUMMARIES} WHERE trace_id IN ('p000001', 'bulk1') ORDER BY 1"
    ).fetchall() == [(3,), (6,)]


def test_a_partition_detached_inside_the_window_is_captured_by_the_next_refresh(db, partitioned):
    conn = partitioned
    conn.execute(traces_sql("p", 10, age="2 days"))
    conn.execute(traces_sql("q", 10, age="1 hour"))
    refresh(conn)
    two_days_ago = partition_of(conn, "now() - interval '2 days'")
    conn.execute(f"ALTER TABLE otel_traces DETACH PARTITION {two_days_ago}")
    assert refresh(conn)["kind"] == "incremental"
    assert_exact(conn)
    assert conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone() == (10,)


DROPPED = "leaf relations of otel_traces with spans inside the window were dropped"


def test_a_partition_dropped_inside_the_window_makes_the_next_refresh_rebuild(db, partitioned):
    conn = partitioned
    conn.execute(traces_sql("p", 10, age="2 days"))
    conn.execute(traces_sql("q", 10, age="1 hour"))
    refresh(conn)
    dropped = partition_of(conn, "now() - interval '2 days'")
    conn.execute(f"DROP TABLE {dropped}")
    verified = run_cli("verify", DATABASE_URL=db.url)
    assert verified.returncode == 2
    assert f"a full rebuild is pending ({DROPPED}: public.{dropped}" in verified.stdout
    outcome = refresh(conn)
    assert (outcome["kind"], outcome["reason"]) == ("full", f"{DROPPED}: public.{dropped}")
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
    # A direct insert into a partition fires none of the parent's triggers.
    conn.execute(
        f"INSERT INTO {today} (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'direct', 'root', 'bypassed'), (now(), 'q000001', 'extra', 'bypassed')"
    )
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


def test_a_replica_sessions_writes_are_captured_row_by_row(inc, conn):
    """A logical replication apply (session_replication_role = replica) fires only row-level
    triggers enabled REPLICA or ALWAYS: those capture its writes."""
    with_traces(conn, "t", 5)
    conn.execute("SET session_replication_role = replica")
    conn.execute(traces_sql("replica", 2))
    conn.execute("UPDATE otel_traces SET trace_id = 't000009' WHERE trace_id = 't000001'")
    conn.execute("DELETE FROM otel_traces WHERE trace_id = 't000002'")
    conn.execute("RESET session_replication_role")
    assert dirty_keys(conn) > 0
    refresh(conn)
    assert_exact(conn)


def test_verify_reports_disabled_capture_triggers_and_the_writes_they_missed(inc, conn):
    with_traces(conn, "t", 5)
    name = CAPTURE_TRIGGERS["INSERT"]
    conn.execute(f"ALTER TABLE {TRACES_TABLE} DISABLE TRIGGER {name}")
    try:
        conn.execute(traces_sql("missed", 2))
        result = summaries.verify(here(conn))
    finally:
        conn.execute(f"ALTER TABLE {TRACES_TABLE} ENABLE TRIGGER {name}")
    assert not result.exact
    assert f"trigger(s) {name} missing or disabled (2 missing, 0 unexpected" in result.note

    assert summaries.refresh(here(conn), full=True).refreshed
    assert summaries.verify(here(conn)).exact


def test_status_reports_the_mode_the_backlog_and_the_last_refresh(inc, conn):
    with_traces(conn, "t", 10)
    conn.execute(traces_sql("queued", 4))
    result = run_cli("status", "--json", DATABASE_URL=inc.url)
    payload = json.loads(result.stdout)
    assert payload["mode"] == "incremental"
    metrics = payload["metrics"]
    assert metrics["backlog_traces"] == 4
    assert metrics["last_refresh_full"] == 0
    assert metrics["last_refresh_age_seconds"] is not None
    assert metrics["capture_enabled"] == 1
    text = run_cli("status", DATABASE_URL=inc.url).stdout
    assert "(incremental mode, refreshed every 2min)" in text
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
    assert any(f"{name} missing or not firing" in problem for problem in problems), problems


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
# The relations, the capture triggers (statement and row level) and the routines
# (the incremental mode's and the metrics function) of an incremental install.
EVERYTHING = (
    4,
    len(incremental.triggers_for(incremental.PLAIN_STORE)),
    len(incremental.ROUTINES) + 1,
)


def test_downgrade_removes_everything_and_upgrading_again_works(db):
    install(db)
    with db.connect(autocommit=True) as conn:
        with_traces(conn, "t", 10)
        triggers = [*CAPTURE_TRIGGERS.values(), *CAPTURE_ROW_TRIGGERS.values()]
        assert conn.execute(LEFTOVERS, {"triggers": triggers}).fetchone() == EVERYTHING

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
    assert (
        command
        == f"CALL {cron_db.schema}.{REFRESH_FUNCTION}(false, CAST(NULL AS pg_catalog.jsonb))"
    )
    cron_db.migrate("downgrade", "-1")
    assert jobs_named(cron_db, name) == {name: 0}


@pytest.mark.parametrize("installed", MODES)
@pytest.mark.parametrize("requested", MODES)
def test_an_install_whose_version_row_was_lost_is_kept_in_its_mode(db, installed, requested):
    """As a restore that brought the objects back but not the version row: upgrading again
    records the revision and keeps the installed mode, whatever the options ask."""
    db.migrate("upgrade", "head", x={"summaries": installed})
    db.migrate("stamp", FIRST)
    notices = db.migrate("upgrade", "head", x={"summaries": requested})
    assert f"is installed in {installed} mode: kept as it is" in notices
    assert db.version() == HEAD
    assert db.mode() == installed
    if installed != requested:
        assert f"trace-summaries switch {requested}" in notices
    with db.connect(autocommit=True) as conn:
        triggers = [*CAPTURE_TRIGGERS.values(), *CAPTURE_ROW_TRIGGERS.values()]
        everything = EVERYTHING if installed == "incremental" else (1, 0, 1)
        assert conn.execute(LEFTOVERS, {"triggers": triggers}).fetchone() == everything
        conn.execute(traces_sql("after", 3))
        if installed == "incremental":
            refresh(conn)
            assert_exact(conn)


def test_an_install_left_incomplete_is_removed_and_built_again(db):
    """An incremental install missing part of its objects (damaged by hand, or left by an
    older release) is not kept: it is removed, and the requested mode built again."""
    install(db)
    db.execute(f"DROP FUNCTION {incremental.APPLY.name}(timestamptz, timestamptz)")
    db.migrate("stamp", FIRST)
    notices = db.migrate("upgrade", "head", x={"summaries": "incremental"})
    assert "left incomplete by an interrupted run: removing it to build it again" in notices
    assert db.mode() == "incremental"
    with db.connect(autocommit=True) as conn:
        triggers = [*CAPTURE_TRIGGERS.values(), *CAPTURE_ROW_TRIGGERS.values()]
        assert conn.execute(LEFTOVERS, {"triggers": triggers}).fetchone() == EVERYTHING
        conn.execute(traces_sql("after", 3))
        refresh(conn)
        assert_exact(conn)
