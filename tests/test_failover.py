"""Failover drill: a hot standby serves the view, and after promotion pg_cron refreshes it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.clusters import local_server, pg_ctl, streaming_standby
from tests.conftest import LISTING_DATA_SQL, TEST_DATABASE_URL, Database, first_run_after

pytestmark = pytest.mark.skipif(
    bool(TEST_DATABASE_URL), reason="the failover drill starts its own primary and standby"
)


def wait_for_replay(primary: Database, standby: Database) -> None:
    lsn = primary.scalar("SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + 60
    while standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(lsn),)) is not True:
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.1)


def wait_until_visible(standby: Database, check: str) -> None:
    deadline = time.monotonic() + 60
    while standby.scalar(check) is not True:
        if time.monotonic() > deadline:
            matviews = standby.scalar("SELECT array_agg(matviewname) FROM pg_matviews")
            replayed = standby.scalar("SELECT pg_last_wal_replay_lsn()")
            raise AssertionError(f"{check} never held on the standby: {matviews}, at {replayed}")
        time.sleep(0.2)


def test_standby_serves_the_view_and_the_promoted_primary_runs_the_refresh_job(report):
    with (
        local_server("primary", pg_cron_database="app") as primary_server,
        streaming_standby(primary_server) as standby_server,
    ):
        primary = Database(primary_server, "app")
        standby = Database(standby_server, "app")
        primary.alembic("upgrade", "00000000000001")
        primary.execute(LISTING_DATA_SQL)
        primary.alembic("upgrade", "head")
        jobid = primary.scalar("SELECT jobid FROM cron.job WHERE jobname = %s", (primary.job_name,))
        wait_for_replay(primary, standby)

        # The standby serves the view.
        assert standby.scalar("SELECT pg_is_in_recovery()") is True
        wait_until_visible(standby, "SELECT to_regclass('otel_trace_summaries') IS NOT NULL")
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
                    started = time.monotonic()
                    conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries")
                    refreshes.append(time.monotonic() - started)

        worker = threading.Thread(target=refresh_on_primary)
        worker.start()
        reads, errors = 0, []
        try:
            with standby.connect(autocommit=True) as reader:
                reader.execute("SET statement_timeout = '5s'")
                deadline = time.monotonic() + 15
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
        report(f"{reads} standby reads during {len(refreshes)} primary refreshes, errors: {errors}")
        assert errors == []
        assert len(refreshes) >= 3

        # Failover: stop the primary, promote the standby.
        wait_for_replay(primary, standby)
        pg_ctl(primary_server.datadir, "-m", "fast", "-w", "stop")
        pg_ctl(standby_server.datadir, "-w", "promote")
        promoted_at = standby.scalar("SELECT now()")
        assert standby.scalar("SELECT pg_is_in_recovery()") is False
        standby.execute(
            "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
            "VALUES (now(), 'after-failover', 'root', 'GET /after')"
        )

        run = first_run_after(standby.connect, jobid, promoted_at)
        assert run["status"] == "succeeded", run
        assert (
            standby.scalar(
                "SELECT count(*) FROM otel_trace_summaries WHERE trace_id = 'after-failover'"
            )
            == 1
        )
        took = (run["end_time"] - promoted_at).total_seconds()
        report(
            f"promotion to first successful pg_cron refresh: {took:.1f}s "
            "(bounded by the */2 schedule)"
        )
