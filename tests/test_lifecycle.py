"""Through a database's life: a lost job, lost bookkeeping, lost grants, and `repair`.

An import (``pg_dump``/``pg_restore``, CNPG's ``bootstrap.initdb.import``) brings
back the summaries but not their job, which lives in pg_cron's database; a
schema-only import brings back empty bookkeeping tables; ``--no-privileges``
drops the grants and revokes. Status says so at once, the commands never fail
with a traceback, ``alembic upgrade head`` never changes the installed mode,
and ``trace-summaries repair`` puts it right.
"""

from __future__ import annotations

import json

import pytest

from cnpg_trace_summaries import contract
from tests.support.commands import run_cli
from tests.support.cron import jobs_named
from tests.support.database import Database
from tests.support.incremental import assert_exact, traces_sql
from tests.support.revisions import FIRST, HEAD
from tests.support.roles import grant, login_role

MODES = ("view", "incremental")


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_job_is_unhealthy_at_once_and_repair_schedules_it_again(cron_db, mode):
    cron_db.migrate("upgrade", "head", x={"summaries": mode})
    name = cron_db.job_name
    cron_db.execute("DELETE FROM cron.job WHERE jobname = %s", (name,))
    result = run_cli("status", "--json", DATABASE_URL=cron_db.url)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(f'"{name}" is missing: run `trace-summaries repair`' in p for p in problems)
    # Upgrading again at head changes nothing, and says what to run.
    notices = cron_db.migrate("upgrade", "head")
    assert f'its pg_cron job "{name}" is missing' in notices
    assert "trace-summaries repair" in notices

    dry = run_cli("repair", "--dry-run", DATABASE_URL=cron_db.url)
    assert dry.returncode == 0, dry.stderr
    assert "would change: re-created the missing pg_cron job" in dry.stdout
    assert jobs_named(cron_db, name) == {name: 0}
    repaired = run_cli("repair", DATABASE_URL=cron_db.url)
    assert repaired.returncode == 0, repaired.stderr
    assert "changed: re-created the missing pg_cron job" in repaired.stdout
    assert jobs_named(cron_db, name) == {name: 1}
    again = run_cli("repair", DATABASE_URL=cron_db.url)
    assert again.stdout.strip() == "otel_trace_summaries: nothing to repair"
    assert run_cli("status", DATABASE_URL=cron_db.url).returncode == 0


def test_empty_bookkeeping_never_ends_in_a_traceback_and_repair_restores_it(db: Database):
    """As a schema-only import leaves an incremental install: its state row and version row
    are gone (the tables came back empty)."""
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    db.execute(traces_sql("t", 10))
    db.execute(f"DELETE FROM {contract.STATE_TABLE}")
    db.execute(f"DELETE FROM {contract.VERSION_TABLE}")
    for command in (("status",), ("verify",), ("list",), ("status", "--json")):
        result = run_cli(*command, DATABASE_URL=db.url)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1, 2)
    assert "state row" in run_cli("verify", DATABASE_URL=db.url).stdout

    repaired = run_cli("repair", DATABASE_URL=db.url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "restored the state row" in repaired.stdout
    assert f"recorded revision {HEAD}" in repaired.stdout
    assert db.version() == HEAD
    assert db.mode() == "incremental"
    assert run_cli("refresh", DATABASE_URL=db.url).returncode == 0  # a full rebuild
    with db.connect(autocommit=True) as conn:
        assert_exact(conn)


@pytest.mark.parametrize("mode", MODES)
def test_grants_lost_in_a_restore_are_reported_and_repaired(db: Database, mode):
    """``pg_restore --no-privileges``: the routines are PUBLIC's to run again, the reader's
    SELECT and pg_monitor's EXECUTE are gone."""
    db.migrate("upgrade", "head", x={"summaries": mode})
    functions = db.rows(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p WHERE p.pronamespace = "
        "'public'::regnamespace AND p.proname LIKE 'otel_trace_summaries%'"
    )
    with login_role(db.server, "dashboard", databases=(db.dbname,)) as reader:
        for (function,) in functions:
            kind = "PROCEDURE" if "refresh" in function or "rebuild(" in function else "FUNCTION"
            db.execute(f"GRANT EXECUTE ON {kind} {function} TO PUBLIC")
        db.execute(f"REVOKE EXECUTE ON FUNCTION {contract.METRICS_FUNCTION}() FROM pg_monitor")
        result = run_cli("status", "--json", DATABASE_URL=db.url)
        assert result.returncode == 2
        assert any("PUBLIC may execute" in p for p in json.loads(result.stdout)["problems"])

        repaired = run_cli("repair", "--reader-role", reader, DATABASE_URL=db.url)
        assert repaired.returncode == 0, repaired.stdout
        assert f"granted SELECT on otel_trace_summaries to {reader}" in repaired.stdout
        assert f"granted EXECUTE on {contract.METRICS_FUNCTION} to pg_monitor" in repaired.stdout
        assert (
            db.scalar(
                "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) "
                "FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace "
                "AND p.proname LIKE 'otel_trace_summaries%'"
            )
            is False
        )
        assert db.scalar(
            "SELECT has_table_privilege(%s, 'otel_trace_summaries', 'SELECT')", (reader,)
        )
        assert run_cli("status", DATABASE_URL=db.url).returncode == 0


@pytest.mark.parametrize("installed", MODES)
def test_upgrading_an_import_whose_version_table_came_back_empty_keeps_its_mode(db, installed):
    other = "view" if installed == "incremental" else "incremental"
    db.migrate("upgrade", "head", x={"summaries": installed})
    db.execute(f"DELETE FROM {contract.VERSION_TABLE}")
    notices = db.migrate("upgrade", "head", x={"summaries": other})
    assert db.mode() == installed
    assert db.version() == HEAD
    assert "kept as it is" in notices
    assert f"trace-summaries switch {other}" in notices


def test_a_lost_record_is_restored_from_what_is_installed(db: Database):
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    db.execute("COMMENT ON TABLE otel_trace_summaries IS 'someone wrote over it'")
    status = run_cli("status", DATABASE_URL=db.url)
    assert status.returncode == 1
    assert "has no record of its mode" in status.stderr and "repair" in status.stderr
    repaired = run_cli("repair", DATABASE_URL=db.url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "incremental mode (from its kind)" in repaired.stdout
    assert db.mode() == "incremental"


def test_repair_on_a_database_without_the_summaries_says_to_upgrade(db: Database):
    db.migrate("upgrade", FIRST)
    result = run_cli("repair", DATABASE_URL=db.url)
    assert result.returncode == 1
    assert "run `alembic upgrade head` first" in result.stderr


def test_grants_are_given_to_the_reader_role_named_to_repair_only_where_it_exists(db: Database):
    db.migrate("upgrade", "head")
    result = run_cli("repair", "--reader-role", "nobody_here", DATABASE_URL=db.url)
    assert result.returncode == 2
    assert "cannot: reader role 'nobody_here' does not exist" in result.stdout


def test_a_monitoring_role_may_read_the_metrics_and_nothing_else(db: Database):
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    with login_role(db.server, "monitor", databases=(db.dbname,)) as monitor:
        grant(db.server, db.dbname, "GRANT pg_monitor TO {}", monitor)
        watcher = db.as_role(monitor, "app-password")
        assert watcher.scalar(f"SELECT mode FROM {contract.METRICS_FUNCTION}()") == "incremental"
        for routine in (
            "otel_trace_summaries_refresh()",
            "otel_trace_summaries_rebuild(NULL, NULL)",
        ):
            with pytest.raises(Exception, match="permission denied"):
                watcher.execute(f"CALL {routine}")
