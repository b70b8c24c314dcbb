"""Fresh within seconds: the incremental mode's job every 10 seconds where pg_cron takes
schedules in seconds (1.5 and later), refused with one line where it does not (1.4).

The servers are chosen by the pg_cron their installation holds: PostgreSQL 18 with the
pg_cron 1.6 that ``make extensions`` builds, PostgreSQL 15 with Debian's 1.4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from cnpg_trace_summaries.contract import SUMMARIES, VERSION_TABLE
from tests.support.commands import assert_one_clear_line, run_cli
from tests.support.cron import job_id
from tests.support.database import Database, schema_in
from tests.support.incremental import traces_sql
from tests.support.servers import cron_labels

TEN_SECONDS = {"summaries": "incremental", "refresh_interval": "10s"}
RUNS_SQL = """
SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'),
       string_agg(DISTINCT return_message, '; ') FILTER (WHERE status = 'failed')
FROM cron.job_run_details WHERE jobid = %s AND start_time > %s
"""


@pytest.fixture(params=cron_labels(takes_seconds=True))
def seconds_db(request, server_pool) -> Iterator[Database]:
    """A schema in the pg_cron database of a server whose pg_cron takes seconds."""
    server = server_pool.cron(request.param)
    with schema_in(server, server.cron_database) as database:
        yield database


@pytest.fixture(params=cron_labels(takes_seconds=False))
def minutes_db(request, server_pool) -> Iterator[Database]:
    """A schema in the pg_cron database of a server whose pg_cron takes whole minutes only."""
    server = server_pool.cron(request.param)
    with schema_in(server, server.cron_database) as database:
        yield database


def job(database: Database) -> tuple[int, str]:
    """The job's id and schedule (``database`` is where pg_cron lives)."""
    jobid = job_id(database.connect, database.job_name)
    assert jobid is not None, "no job"
    return jobid, database.scalar("SELECT schedule FROM cron.job WHERE jobid = %s", (jobid,))


@pytest.mark.pg_cron_tick
def test_at_10s_pg_cron_runs_the_job_three_times_in_40s_and_a_new_trace_is_listed_within_20s(
    seconds_db: Database, report
):
    seconds_db.migrate("upgrade", "head", x=TEN_SECONDS)
    jobid, schedule = job(seconds_db)
    assert schedule == "10 seconds"
    installed = seconds_db.scalar("SELECT now()")
    seconds_db.execute(traces_sql("fresh", 1))
    written = time.monotonic()
    listed = None
    while time.monotonic() - written < 40:
        if listed is None and seconds_db.scalar(
            f"SELECT count(*) FROM {SUMMARIES} WHERE trace_id = 'fresh000001'"
        ):
            listed = time.monotonic() - written
        succeeded, failed, why = seconds_db.rows(RUNS_SQL, (jobid, installed))[0]
        assert failed == 0, why
        if listed is not None and succeeded >= 3:
            break
        time.sleep(0.2)
    waited = time.monotonic() - written
    report(f"listed {listed:.1f} s after its insert; {succeeded} runs in {waited:.0f} s")
    assert listed is not None and listed <= 20, listed
    assert succeeded >= 3


def test_seconds_where_pg_cron_takes_whole_minutes_fail_with_one_line_and_change_nothing(
    minutes_db: Database,
):
    result = minutes_db.alembic("upgrade", "head", check=False, **{
        "TRACE_SUMMARIES_MODE": "incremental", "TRACE_SUMMARIES_REFRESH_INTERVAL": "10s"
    })  # fmt: skip
    version = minutes_db.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
    assert_one_clear_line(
        result, f"pg_cron {version}", "refresh_interval=10s", "nearest it takes is 1min"
    )
    for relation in ("otel_traces", SUMMARIES, VERSION_TABLE):
        assert minutes_db.scalar("SELECT to_regclass(%s)", (relation,)) is None, relation
    assert job_id(minutes_db.connect, minutes_db.job_name) is None


def test_schedule_every_changes_the_interval_and_recreates_a_missing_job(seconds_db: Database):
    seconds_db.migrate("upgrade", "head", x={"summaries": "incremental"})
    assert job(seconds_db)[1] == "*/2 * * * *"
    result = run_cli("schedule", "--every", "10s", DATABASE_URL=seconds_db.url)
    assert result.returncode == 0, result.stderr
    assert job(seconds_db)[1] == "10 seconds"
    seconds_db.execute("SELECT cron.unschedule(%s)", (seconds_db.job_name,))
    result = run_cli("schedule", "--every", "30s", DATABASE_URL=seconds_db.url)
    assert result.returncode == 0, result.stderr
    assert job(seconds_db)[1] == "30 seconds"
    status = json.loads(run_cli("status", "--json", DATABASE_URL=seconds_db.url).stdout)
    assert status["refresh_interval"] == "30s", status


@pytest.mark.pg_cron_tick
def test_at_10s_status_is_unhealthy_once_no_run_has_succeeded_within_two_intervals(
    seconds_db: Database,
):
    seconds_db.migrate("upgrade", "head", x=TEN_SECONDS)
    jobid, _ = job(seconds_db)
    seconds_db.execute("SELECT cron.alter_job(%s, active := false)", (jobid,))

    def stale() -> list[str]:
        result = run_cli("status", "--json", DATABASE_URL=seconds_db.url)
        assert result.returncode == 2, result.stdout  # the inactive job, at least
        problems = json.loads(result.stdout)["problems"]
        return [p for p in problems if "never succeeded" in p and "2 intervals of 10s" in p]

    assert stale() == []  # just installed: within two intervals
    time.sleep(21)  # two intervals of 10 s, and a second
    assert stale()


def test_a_lost_record_gets_back_the_interval_its_job_runs_at(seconds_db: Database):
    seconds_db.migrate("upgrade", "head", x=TEN_SECONDS)
    seconds_db.execute(f"COMMENT ON TABLE {SUMMARIES} IS 'someone wrote over it'")
    repaired = run_cli("repair", DATABASE_URL=seconds_db.url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "refreshed every 10s (as its pg_cron job runs" in repaired.stdout
    assert job(seconds_db)[1] == "10 seconds"
    status = json.loads(run_cli("status", "--json", DATABASE_URL=seconds_db.url).stdout)
    assert (status["mode"], status["refresh_interval"]) == ("incremental", "10s")
