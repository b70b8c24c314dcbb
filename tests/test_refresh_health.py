"""`trace-summaries status` and the fallback refresher `trace-summaries refresh --every`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from cnpg_trace_summaries.contract import REFRESH_LOCK_CLASS, lock_key_sql
from tests.support import ROOT
from tests.support.commands import environment, run_cli
from tests.support.database import Database
from tests.support.revisions import FIRST


class Refresher:
    """``trace-summaries refresh --every`` running in the background."""

    def __init__(self, database: Database, every: str = "0.5"):
        env = environment(DATABASE_URL=database.url, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnpg_trace_summaries.cli", "refresh", "--every", every],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []

    def wait_for(self, fragment: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while sum(fragment in line for line in self.lines) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"never saw {count}x {fragment!r}: {self.lines}")
            self.lines.append(self.process.stdout.readline())

    def stop(self, sig=signal.SIGINT) -> int:
        self.process.send_signal(sig)
        out, _ = self.process.communicate(timeout=30)
        self.lines += out.splitlines()
        return self.process.returncode


@pytest.fixture
def summarized(cron_db: Database) -> Database:
    cron_db.migrate("upgrade", FIRST)
    cron_db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "SELECT now() - interval '10 minutes' - g * interval '1 minute', 'trace-' || g, 'root', "
        "'GET /' "
        "FROM generate_series(1, 20) AS g"
    )
    cron_db.migrate("upgrade", "head")
    return cron_db


def test_status_says_ok_and_exits_0_for_a_fresh_view(summarized: Database):
    result = run_cli("status", DATABASE_URL=summarized.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("otel_trace_summaries: OK")
    assert f"'{summarized.job_name}' */2 * * * *" in result.stdout

    payload = json.loads(run_cli("status", "--json", DATABASE_URL=summarized.url).stdout)
    assert payload["healthy"] is True
    assert payload["metrics"]["estimated_rows"] == 20
    assert payload["refresh_job"]["schedule"] == "*/2 * * * *"
    assert payload["metrics"]["lag_seconds"] < 60


def test_status_exits_2_when_a_span_has_waited_longer_than_two_intervals(summarized: Database):
    # Keep pg_cron from refreshing in the middle of the test.
    summarized.execute(
        "SELECT cron.alter_job(jobid, active := false) FROM cron.job WHERE jobname = %s",
        (summarized.job_name,),
    )
    summarized.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) "
        "VALUES (now() - interval '5 minutes', 'waiting', 'root')"
    )
    result = run_cli("status", "--json", DATABASE_URL=summarized.url)
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert payload["healthy"] is False
    assert payload["metrics"]["lag_seconds"] >= 300
    assert any("do not show a span written" in problem for problem in payload["problems"])


def test_a_span_that_just_arrived_after_a_quiet_spell_is_not_late(summarized: Database):
    """The newest trace is ten minutes old; a span arriving now has waited for nothing yet."""
    summarized.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 'new', 'root')"
    )
    result = run_cli("status", "--json", DATABASE_URL=summarized.url)
    payload = json.loads(result.stdout)
    assert payload["metrics"]["lag_seconds"] < 60
    assert result.returncode == 0, payload["problems"]


def test_status_is_not_ok_when_the_job_has_not_succeeded_within_two_intervals(
    summarized: Database,
):
    # As if the job had been scheduled ten minutes ago and never run since.
    summarized.execute(
        "SELECT cron.alter_job(jobid, active := false) FROM cron.job WHERE jobname = %s",
        (summarized.job_name,),
    )
    comment = summarized.scalar("SELECT obj_description('otel_trace_summaries'::regclass)")
    old = re.sub(r"installed_at=\S+", "installed_at=2026-01-01T00:00:00Z", comment)
    summarized.execute(f"COMMENT ON MATERIALIZED VIEW otel_trace_summaries IS '{old}'")
    result = run_cli("status", "--json", DATABASE_URL=summarized.url)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any("has never succeeded" in problem for problem in problems), problems


def test_a_freshly_scheduled_job_that_has_not_run_yet_is_ok(summarized: Database):
    result = run_cli("status", "--json", DATABASE_URL=summarized.url)
    payload = json.loads(result.stdout)
    assert payload["last_success_at"] is None
    assert payload["metrics"]["installed_age_seconds"] < 60
    assert result.returncode == 0, payload["problems"]


def test_status_without_pg_cron_points_to_the_fallback_refresher(nocron_db: Database):
    nocron_db.migrate("upgrade", "head")
    result = run_cli("status", DATABASE_URL=nocron_db.url)
    assert result.returncode == 0
    assert "trace-summaries refresh --every 2min" in result.stdout


def test_refresh_every_keeps_refreshing_and_stops_cleanly_on_ctrl_c(summarized: Database):
    refresher = Refresher(summarized)
    refresher.wait_for("refreshed otel_trace_summaries concurrently", count=3)
    summarized.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 'late', 'root')"
    )
    refresher.wait_for("refreshed otel_trace_summaries concurrently", count=5)
    assert refresher.stop() == 0
    assert refresher.lines[-1].strip() == "stopped"
    assert summarized.scalar("SELECT count(*) FROM otel_trace_summaries WHERE trace_id = 'late'")


def test_refresh_every_stops_cleanly_on_sigterm(summarized: Database):
    refresher = Refresher(summarized)
    refresher.wait_for("refreshed")
    assert refresher.stop(signal.SIGTERM) == 0
    assert refresher.lines[-1].strip() == "stopped"


def test_a_failed_refresh_is_reported_and_retried_at_the_next_tick(summarized: Database):
    refresher = Refresher(summarized)
    refresher.wait_for("refreshed")
    # Without its unique index the view cannot be refreshed concurrently.
    summarized.execute("DROP INDEX idx_trace_summaries_trace_id")
    refresher.wait_for("FAILED", count=2)
    summarized.execute(
        "CREATE UNIQUE INDEX idx_trace_summaries_trace_id ON otel_trace_summaries (trace_id)"
    )
    before = sum("refreshed" in line for line in refresher.lines)
    refresher.wait_for("refreshed", count=before + 1)
    assert refresher.stop() == 0
    failed = next(line for line in refresher.lines if "FAILED" in line)
    assert "cannot refresh materialized view" in failed
    assert "retrying in 0.5s" in failed


def test_two_refreshers_never_overlap(summarized: Database):
    with summarized.connect() as holder:
        holder.execute(f"SELECT pg_advisory_xact_lock({lock_key_sql(REFRESH_LOCK_CLASS)})")
        result = run_cli("refresh", DATABASE_URL=summarized.url)
    assert result.returncode == 3
    assert "skipped: another refresher holds the lock" in result.stdout
    assert run_cli("refresh", DATABASE_URL=summarized.url).returncode == 0


def test_status_is_not_ok_while_an_interrupted_switch_has_left_something(db: Database):
    db.migrate("upgrade", "head")
    db.execute("CREATE MATERIALIZED VIEW otel_trace_summaries_next AS SELECT 1 AS trace_id")
    result = run_cli("status", "--json", DATABASE_URL=db.url)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert problems == [
        "an interrupted switch left otel_trace_summaries_next: "
        "run `trace-summaries switch view` to remove it"
    ]
    assert run_cli("switch", "view", DATABASE_URL=db.url).returncode == 0
    assert run_cli("status", DATABASE_URL=db.url).returncode == 0
