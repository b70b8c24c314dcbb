"""The console command, the demo data, and the local cluster behind `make run`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cnpg_trace_summaries.contract import STATUS_ERROR
from cnpg_trace_summaries.dev import demo
from tests.support import ROOT
from tests.support.commands import environment, run_alembic, run_cli
from tests.support.database import Database


# -- demo data -------------------------------------------------------------------
def test_demo_spans_look_like_a_collector_wrote_them():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    spans = list(demo.generate_spans(2_000, seed=3, now=now))
    traces = {span.trace_id for span in spans}

    assert len(traces) == 2_000
    assert [s.timestamp for s in spans] == sorted(s.timestamp for s in spans)
    roots = Counter(s.trace_id for s in spans if s.parent_span_id == "")
    assert set(roots) == traces and set(roots.values()) == {1}
    assert len({s.service_name for s in spans}) >= 8
    assert max(Counter(s.trace_id for s in spans).values()) >= 10  # nested call trees
    failing = {s.trace_id for s in spans if s.status_code == STATUS_ERROR}
    assert 0.01 < len(failing) / len(traces) < 0.06
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano for s in spans)
    stale = {s.trace_id for s in spans if s.timestamp < now - timedelta(days=7)}
    assert 0 < len(stale) < 0.05 * len(traces)


def test_demo_is_reproducible_with_a_seed():
    first = [s.span_id for s in demo.generate_spans(50, seed=11)]
    assert first == [s.span_id for s in demo.generate_spans(50, seed=11)]


# -- console command ---------------------------------------------------------------
def test_demo_command_loads_refreshes_and_prints_the_newest_ten(cron_db: Database):
    cron_db.migrate("upgrade", "head")
    result = run_cli("demo", "--traces", "300", "--seed", "5", DATABASE_URL=cron_db.url)
    assert result.returncode == 0, result.stderr
    assert "loading spans " in result.stderr  # progress is shown
    lines = result.stdout.splitlines()
    assert lines[0].startswith("newest 10 of ")
    header = next(i for i, line in enumerate(lines) if line.startswith("last span"))
    assert len([line for line in lines[header + 2 :] if line.strip()][:10]) == 10
    assert f"'{cron_db.job_name}': */2 * * * *" in result.stdout

    listed = run_cli("list", "--limit", "3", "--json", DATABASE_URL=cron_db.url)
    payload = json.loads(listed.stdout)
    assert len(payload["newest"]) == 3
    assert payload["refresh_job"]["schedule"] == "*/2 * * * *"
    assert payload["traces"] == cron_db.scalar("SELECT count(*) FROM otel_trace_summaries")


@pytest.mark.parametrize("command", ["list", "status", "refresh", "verify"])
def test_commands_before_the_migration_say_to_upgrade_first(db: Database, command):
    result = run_cli(command, DATABASE_URL=db.url)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "trace-summaries: otel_trace_summaries does not exist in this database; "
        "run `alembic upgrade head` first"
    )


def test_status_json_says_unhealthy_in_json_when_there_is_nothing_to_check(db: Database):
    result = run_cli("status", "--json", DATABASE_URL=db.url)
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert payload["healthy"] is False
    assert "does not exist in this database" in payload["problems"][0]


@pytest.mark.parametrize("argv", [["status", "--jsno"], ["list", "--limit", "abc"], ["nope"]])
def test_usage_errors_end_with_one_line_and_exit_1_not_2_which_means_unhealthy(argv):
    result = run_cli(*argv)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("trace-summaries")


def test_refresh_command_refreshes_concurrently(db: Database):
    db.migrate("upgrade", "head")
    db.execute("INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 'a', 'b')")
    result = run_cli("refresh", DATABASE_URL=db.url)
    assert result.returncode == 0, result.stderr
    assert "refreshed otel_trace_summaries concurrently" in result.stdout
    assert db.scalar("SELECT count(*) FROM otel_trace_summaries") == 1


# -- the local cluster of `make run` ----------------------------------------------
@pytest.fixture
def local_dir(tmp_path: Path):
    """A state directory the postgres user cannot reach (pytest's tmp is private)."""
    yield tmp_path
    state = tmp_path / "cluster.json"
    if state.exists():
        env = {"TRACE_SUMMARIES_LOCAL_DIR": str(tmp_path)}
        run_cli("local", "stop", **env)
        shutil.rmtree(json.loads(state.read_text())["cluster_dir"], ignore_errors=True)


def test_local_cluster_starts_migrates_loads_demo_and_stops(local_dir: Path):
    env = {"TRACE_SUMMARIES_LOCAL_DIR": str(local_dir)}
    started = run_cli("local", "start", **env)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("local PostgreSQL is running on 127.0.0.1:")
    assert "postgres:" not in started.stdout  # the password stays out of the output
    again = run_cli("local", "start", **env)  # reused, not re-created
    assert again.stdout == started.stdout

    url = run_cli("local", "url", **env).stdout.strip()
    migrated = run_alembic("upgrade", "head", database_url=url)
    assert "created extension pg_cron in database app" in migrated.stderr
    assert 'pg_cron job "otel_trace_summaries:app.public" scheduled' in migrated.stderr
    assert run_cli("status", DATABASE_URL=url).returncode == 0

    shown = run_cli("demo", "--traces", "100", DATABASE_URL=url)
    assert shown.returncode == 0, shown.stderr
    assert "pg_cron job" in shown.stdout

    stopped = run_cli("local", "stop", **env)
    assert stopped.stdout.strip() == "local PostgreSQL stopped"
    status = run_cli("local", "status", **env)
    assert status.returncode == 3


# What a command imports: the runtime never needs the development tools.
IMPORTED_DEV_MODULES = """
import sys
from {module} import main
try:
    main({argv!r})
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.startswith("cnpg_trace_summaries.dev")))
"""


def test_the_runtime_imports_nothing_from_the_development_tools(db: Database):
    commands = [
        ("alembic.config", ["-c", str(ROOT / "alembic.ini"), "upgrade", "head"]),
        ("cnpg_trace_summaries.cli", ["status"]),
    ]
    for module, argv in commands:  # in this order: status reads what the upgrade installed
        result = subprocess.run(
            [sys.executable, "-I", "-c", IMPORTED_DEV_MODULES.format(argv=argv, module=module)],
            cwd=ROOT,
            env=environment(DATABASE_URL=db.url),
            capture_output=True,
            text=True,
            check=True,
        )
        assert db.mode() == "view", result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", (module, result.stdout)
