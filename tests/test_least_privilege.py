"""The migrations as CNPG's `app` user runs them: a non-superuser that owns the database."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.support.commands import assert_one_clear_line, last_line, run_alembic
from tests.support.cron import jobs_named
from tests.support.database import Database
from tests.support.revisions import HEAD
from tests.support.roles import grant


def test_the_whole_chain_runs_in_both_modes_as_a_non_superuser_database_owner(app_db: Database):
    assert app_db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    app_db.migrate("upgrade", "head")
    assert (
        app_db.scalar(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'otel_trace_summaries'"
        )
        == app_db.role
    )
    app_db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 't', 's')"
    )
    app_db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries")
    assert app_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 1
    app_db.migrate("downgrade", "base", x={"drop_trace_data": "yes"})
    app_db.migrate("upgrade", "head", x={"summaries": "incremental"})
    assert app_db.version() == HEAD
    app_db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 't', 's')"
    )
    app_db.execute("CALL otel_trace_summaries_refresh()")
    assert app_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 1


def test_without_usage_on_schema_cron_the_migration_succeeds_and_names_the_grant(
    app_cron_db: Database,
):
    notices = app_cron_db.migrate("upgrade", "head")
    role = app_cron_db.role
    notice = next(line for line in notices.splitlines() if "may not schedule" in line)
    assert f'"GRANT USAGE ON SCHEMA cron TO {role}"' in notice
    assert "manual refresh is required" in notice
    assert app_cron_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 0


def test_with_usage_on_schema_cron_a_non_superuser_schedules_the_job_in_its_own_name(
    app_cron_db: Database, cron_server
):
    grant(cron_server, cron_server.cron_database, "GRANT USAGE ON SCHEMA cron TO {}",
          app_cron_db.role)  # fmt: skip
    app_cron_db.migrate("upgrade", "head")
    with cron_server.connect(cron_server.cron_database) as conn:
        username, command = conn.execute(
            "SELECT username, command FROM cron.job WHERE jobname = %s", (app_cron_db.job_name,)
        ).fetchone()
    assert username == app_cron_db.role
    assert command.endswith(f"{app_cron_db.schema}.otel_trace_summaries")
    app_cron_db.migrate("downgrade", "-1")
    name = app_cron_db.job_name
    assert jobs_named(app_cron_db.as_superuser(), name) == {name: 0}  # anyone's job, not only app's


@pytest.mark.parametrize("mode", ["view", "incremental"])
def test_reader_role_gets_select_on_the_summaries_with_its_name_quoted(db: Database, mode):
    reader = 'Dash"board; DROP TABLE otel_traces; --'
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
    try:
        db.migrate("upgrade", "head", x={"reader_role": reader, "summaries": mode})
        assert db.scalar(
            "SELECT has_table_privilege(%s, 'otel_trace_summaries', 'SELECT')", (reader,)
        )
        assert not db.scalar("SELECT has_table_privilege(%s, 'otel_traces', 'SELECT')", (reader,))
        assert db.scalar("SELECT to_regclass('otel_traces')") is not None
    finally:
        db.migrate("downgrade", "base")
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


def test_reader_role_from_the_environment(db: Database, monkeypatch):
    db.execute("CREATE ROLE dashboard_reader")
    try:
        monkeypatch.setenv("TRACE_SUMMARIES_READER_ROLE", "dashboard_reader")
        db.migrate("upgrade", "head")
        assert db.scalar(
            "SELECT has_table_privilege('dashboard_reader', 'otel_trace_summaries', 'SELECT')"
        )
    finally:
        db.migrate("downgrade", "base")
        db.execute("DROP ROLE dashboard_reader")


def test_an_unknown_reader_role_ends_with_one_clear_line_before_anything_runs(db: Database):
    result = db.alembic("-x", "reader_role=nobody_here", "upgrade", "head", check=False)
    assert_one_clear_line(result)
    assert last_line(result) == (
        "alembic: -x reader_role: role 'nobody_here' does not exist; "
        "create it first, or leave the option out"
    )
    assert db.version() is None
    assert db.scalar("SELECT to_regclass('otel_traces')") is None


def test_a_reader_role_given_to_a_database_at_head_is_named_in_a_warning(db: Database):
    db.migrate("upgrade", "head")
    db.execute("CREATE ROLE late_reader")
    try:
        result = db.alembic("-x", "reader_role=late_reader", "upgrade", "head")
        warning = next(line for line in result.stderr.splitlines() if "late_reader" in line)
        assert warning.startswith("WARNING")
        assert "GRANT SELECT ON public.otel_trace_summaries TO late_reader" in warning
    finally:
        db.migrate("downgrade", "base")
        db.execute("DROP ROLE late_reader")


def test_a_role_that_may_not_create_objects_ends_with_one_clear_line(app_db: Database):
    """A login that can connect but not create in schema public changes nothing."""
    superuser = app_db.as_superuser()
    superuser.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    superuser.execute(
        sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(superuser.role))
    )
    result = run_alembic("upgrade", "head", database_url=app_db.url, check=False)
    assert_one_clear_line(result, "permission denied for schema public")
    assert last_line(result).startswith("alembic: migration failed")
    assert superuser.version() is None


def test_a_downgrade_that_cannot_see_pg_cron_names_the_job_to_remove_where_it_may_be(app_db):
    """pg_cron's settings are hidden from `app`, and postgres has no pg_cron here."""
    app_db.migrate("upgrade", "head")
    result = app_db.alembic("downgrade", "-1")
    warning = next(line for line in result.stderr.splitlines() if "pg_cron was not found" in line)
    assert warning.startswith("WARNING")
    assert "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = " in warning
    assert "-x cron_database=NAME" in warning
