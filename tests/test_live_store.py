"""Migrating a busy trace store: ingest never waits, and a killed upgrade leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from bench.generate import load_traces
from tests.conftest import ROOT, Database, schema_in_cron_database

TRACES = 110_000  # about 1.05 million spans


@pytest.fixture(scope="module")
def busy_store(cron_server) -> Iterator[Database]:
    """A pg_cron schema at revision 1 holding over a million spans."""
    with schema_in_cron_database(cron_server) as database:
        database.alembic("upgrade", "00000000000001")
        with database.connect() as conn:
            load_traces(conn, 1, TRACES, TRACES)
        database.execute("VACUUM ANALYZE otel_traces")
        assert database.scalar("SELECT count(*) FROM otel_traces") >= 1_000_000
        yield database


class Ingest:
    """A collector inserting spans one by one, and a watcher of its lock waits."""

    def __init__(self, database: Database):
        self.database = database
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock_waits: list[str] = []
        self.pid: int | None = None
        self.threads = [threading.Thread(target=self._insert), threading.Thread(target=self._watch)]

    def __enter__(self) -> Ingest:
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(self.latencies) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _insert(self) -> None:
        with self.database.connect(autocommit=True) as conn:
            self.pid = conn.info.backend_pid
            conn.execute("SET lock_timeout = '100ms'")  # a lock wait fails the insert
            n = 0
            while not self.stop.is_set():
                n += 1
                started = time.perf_counter()
                try:
                    conn.execute(
                        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
                        "VALUES (now(), %s, 'root', 'GET /live')",
                        (f"live-{os.getpid()}-{n}-{time.time_ns()}",),
                    )
                except psycopg.Error as error:
                    self.errors.append(str(error))
                self.latencies.append(time.perf_counter() - started)

    def _watch(self) -> None:
        with self.database.connect(autocommit=True) as conn:
            while not self.stop.is_set():
                if self.pid is not None:
                    row = conn.execute(
                        "SELECT wait_event_type, wait_event, query FROM pg_stat_activity "
                        "WHERE pid = %s",
                        (self.pid,),
                    ).fetchone()
                    if row and row[0] == "Lock":
                        self.lock_waits.append(f"{row[1]}: {row[2]}")
                time.sleep(0.005)


def describe(what: str, ingest: Ingest) -> str:
    return (
        f"ingest during {what}: {len(ingest.latencies)} inserts, longest "
        f"{max(ingest.latencies) * 1000:.1f} ms, lock waits seen: {len(ingest.lock_waits)}"
    )


def test_ingest_never_waits_while_the_upgrade_builds_the_view_or_a_refresh_runs(
    busy_store: Database, report
):
    with Ingest(busy_store) as during_upgrade:
        busy_store.alembic("upgrade", "head")
    report(describe("alembic upgrade head over 1M spans", during_upgrade))

    with Ingest(busy_store) as during_refresh:
        busy_store.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries")
    report(describe("REFRESH MATERIALIZED VIEW CONCURRENTLY", during_refresh))

    try:
        for ingest in (during_upgrade, during_refresh):
            assert ingest.errors == []
            assert ingest.lock_waits == []
            assert len(ingest.latencies) > 20
        assert busy_store.scalar(
            "SELECT count(*) FROM otel_trace_summaries WHERE root_span_name = 'GET /live'"
        ) >= len(during_upgrade.latencies)
    finally:
        busy_store.alembic("downgrade", "-1")


def objects_left(database: Database) -> tuple:
    return (
        database.scalar("SELECT version_num FROM alembic_version"),
        database.scalar("SELECT to_regclass('otel_trace_summaries')"),
        database.scalar(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'idx\\_trace\\_summaries\\_%%' "
            "AND relnamespace = to_regnamespace(%s)",
            (database.schema,),
        ),
        database.scalar("SELECT count(*) FROM cron.job WHERE jobname = %s", (database.job_name,)),
    )


def test_killing_the_upgrade_midway_leaves_the_previous_revision_and_nothing_half_built(
    busy_store: Database,
):
    env = dict(os.environ, DATABASE_URL=busy_store.url)
    upgrade = subprocess.Popen(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    backend = None
    deadline = time.monotonic() + 60
    with busy_store.connect(autocommit=True) as watcher:
        while backend is None and time.monotonic() < deadline:
            backend = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                "AND query LIKE '%%CREATE MATERIALIZED VIEW otel_trace_summaries%%' "
                "AND state = 'active' AND pid <> pg_backend_pid()",
                (busy_store.dbname,),
            ).fetchone()
            time.sleep(0.01)
        assert backend is not None, "the upgrade never got to building the view"
        upgrade.send_signal(signal.SIGKILL)
        upgrade.wait()
        while watcher.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend[0],)
        ).fetchone():
            assert time.monotonic() < deadline + 60, "the killed upgrade's backend never ended"
            time.sleep(0.1)

    assert objects_left(busy_store) == ("00000000000001", None, 0, 0)
    busy_store.alembic("upgrade", "head")
    assert objects_left(busy_store)[0] == "00000000000007"
    busy_store.alembic("downgrade", "-1")
