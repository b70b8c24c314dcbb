"""The migrations as CNPG's `app` user runs them: a non-superuser that owns the database."""

from __future__ import annotations

from psycopg import sql

from tests.conftest import Database, run_alembic


def test_the_whole_chain_runs_as_a_non_superuser_database_owner(app_db: Database):
    assert app_db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    app_db.alembic("upgrade", "head")
    assert (
        app_db.scalar(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'otel_trace_summaries'"
        )
        == app_db.server.user
    )
    app_db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 't', 's')"
    )
    app_db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries")
    assert app_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 1
    app_db.alembic("-x", "drop_trace_data=yes", "downgrade", "base")
    app_db.alembic("upgrade", "head")
    assert app_db.scalar("SELECT version_num FROM alembic_version") == "00000000000007"


def test_without_usage_on_schema_cron_the_migration_succeeds_and_names_the_grant(
    app_cron_db: Database,
):
    result = app_cron_db.alembic("upgrade", "head")
    role = app_cron_db.server.user
    notice = next(line for line in result.stderr.splitlines() if "may not schedule" in line)
    assert f'"GRANT USAGE ON SCHEMA cron TO {role}"' in notice
    assert "manual refresh is required" in notice
    assert app_cron_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 0


def test_with_usage_on_schema_cron_a_non_superuser_schedules_the_job_in_its_own_name(
    app_cron_db: Database, cron_server
):
    with cron_server.connect(cron_server.cron_database, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(
                sql.Identifier(app_cron_db.server.user)
            )
        )
    app_cron_db.alembic("upgrade", "head")
    with cron_server.connect(cron_server.cron_database) as conn:
        username, command = conn.execute(
            "SELECT username, command FROM cron.job WHERE jobname = %s", (app_cron_db.job_name,)
        ).fetchone()
    assert username == app_cron_db.server.user
    assert command.endswith(f"{app_cron_db.schema}.otel_trace_summaries")
    app_cron_db.alembic("downgrade", "-1")
    with cron_server.connect(cron_server.cron_database) as conn:
        left = conn.execute(
            "SELECT count(*) FROM cron.job WHERE jobname = %s", (app_cron_db.job_name,)
        ).fetchone()[0]
    assert left == 0


def test_reader_role_gets_select_on_the_view_with_its_name_quoted(fresh_db: Database):
    reader = 'Dash"board; DROP TABLE otel_traces; --'
    fresh_db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
    try:
        fresh_db.alembic("-x", f"reader_role={reader}", "upgrade", "head")
        assert fresh_db.scalar(
            "SELECT has_table_privilege(%s, 'otel_trace_summaries', 'SELECT')", (reader,)
        )
        assert not fresh_db.scalar(
            "SELECT has_table_privilege(%s, 'otel_traces', 'SELECT')", (reader,)
        )
        assert fresh_db.scalar("SELECT to_regclass('otel_traces')") is not None
    finally:
        fresh_db.alembic("downgrade", "base")
        fresh_db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


def test_reader_role_from_the_environment(fresh_db: Database, monkeypatch):
    fresh_db.execute("CREATE ROLE dashboard_reader")
    try:
        monkeypatch.setenv("TRACE_SUMMARIES_READER_ROLE", "dashboard_reader")
        fresh_db.alembic("upgrade", "head")
        assert fresh_db.scalar(
            "SELECT has_table_privilege('dashboard_reader', 'otel_trace_summaries', 'SELECT')"
        )
    finally:
        fresh_db.alembic("downgrade", "base")
        fresh_db.execute("DROP ROLE dashboard_reader")


def test_an_unknown_reader_role_ends_with_one_clear_line_and_changes_nothing(fresh_db: Database):
    result = fresh_db.alembic("-x", "reader_role=nobody_here", "upgrade", "head", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("alembic: migration failed")
    assert 'role "nobody_here" does not exist' in result.stderr
    assert fresh_db.scalar("SELECT version_num FROM alembic_version") == "00000000000001"
    assert fresh_db.scalar("SELECT to_regclass('otel_trace_summaries')") is None


def test_a_role_that_may_not_create_objects_ends_with_one_clear_line(app_db: Database, any_server):
    """A login that can connect but not create in schema public changes nothing."""
    with any_server.connect(app_db.dbname, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(
            sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(any_server.user))
        )
    result = run_alembic("upgrade", "head", database_url=app_db.url, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("alembic: migration failed")
    assert "permission denied for schema public" in last
    with any_server.connect(app_db.dbname) as conn:
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None
