"""The migration chain: pytest-alembic's standard checks, plus what reflection cannot see.

pytest-alembic's tests run twice, on a server with pg_cron and on one without
(see the ``alembic_engine`` fixture). The catalog checks below look at
pg_matviews, pg_indexes and cron.job directly.
"""

from __future__ import annotations

import pytest
from pytest_alembic.tests import (
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from cnpg_trace_summaries.contract import SUMMARY_INDEXES
from cnpg_trace_summaries.sql.cron import COMMANDS
from tests.support.commands import assert_one_clear_line, last_line, psql, run_alembic
from tests.support.cron import jobs_named
from tests.support.database import Database
from tests.support.revisions import FIRST, HEAD

__all__ = ["test_single_head_revision", "test_up_down_consistency", "test_upgrade"]


def summary_objects(database: Database) -> dict:
    """What exists of the view, its indexes and its job in ``database``'s schema."""
    with database.connect() as conn:
        views = conn.execute(
            "SELECT count(*) FROM pg_matviews "
            "WHERE schemaname = %s AND matviewname = 'otel_trace_summaries'",
            (database.schema,),
        ).fetchone()[0]
        indexes = sorted(
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s "
                "AND indexname LIKE 'idx\\_trace\\_summaries\\_%%'",
                (database.schema,),
            )
        )
        jobs = 0
        if conn.execute("SELECT to_regclass('cron.job')").fetchone()[0]:
            jobs = jobs_named(database, database.job_name)[database.job_name]
    return {"views": views, "indexes": indexes, "jobs": jobs}


def test_upgrade_creates_view_indexes_and_job(cron_db: Database):
    cron_db.migrate("upgrade", "head")
    assert summary_objects(cron_db) == {
        "views": 1,
        "indexes": sorted(SUMMARY_INDEXES),
        "jobs": 1,
    }


def test_view_is_populated_and_analyzed_when_created(cron_db: Database):
    cron_db.migrate("upgrade", FIRST)
    cron_db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "SELECT now(), 'trace-' || g, 'root', 'GET /' FROM generate_series(1, 10) AS g"
    )
    cron_db.migrate("upgrade", "head")
    with cron_db.connect() as conn:
        populated, analyzed = conn.execute(
            "SELECT m.ispopulated, s.last_analyze IS NOT NULL FROM pg_matviews m "
            "JOIN pg_stat_user_tables s "
            "ON s.schemaname = m.schemaname AND s.relname = m.matviewname "
            "WHERE m.schemaname = %s AND m.matviewname = 'otel_trace_summaries'",
            (cron_db.schema,),
        ).fetchone()
    assert populated is True
    assert analyzed is True
    assert cron_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 10


def test_downgrade_leaves_no_view_index_or_job_behind_and_upgrade_works_again(cron_db: Database):
    cron_db.migrate("upgrade", "head")
    notices = cron_db.migrate("downgrade", "-1")

    assert "unscheduled" in notices
    assert summary_objects(cron_db) == {"views": 0, "indexes": [], "jobs": 0}
    assert cron_db.version() == FIRST
    assert cron_db.scalar("SELECT to_regclass('otel_traces')") is not None
    # pg_cron itself stays: other jobs may depend on it.
    assert cron_db.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'") == 1

    cron_db.migrate("upgrade", "head")
    assert summary_objects(cron_db)["jobs"] == 1


def test_downgrade_without_pg_cron_touches_nothing_in_cron(nocron_db: Database):
    nocron_db.migrate("upgrade", "head")
    nocron_db.migrate("downgrade", "-1")
    assert summary_objects(nocron_db) == {"views": 0, "indexes": [], "jobs": 0}
    assert nocron_db.scalar("SELECT to_regnamespace('cron')") is None


def test_scheduling_again_updates_the_one_job_instead_of_adding_a_second(cron_db: Database):
    cron_db.migrate("upgrade", "head")
    first = cron_db.scalar("SELECT jobid FROM cron.job WHERE jobname = %s", (cron_db.job_name,))
    # Someone changed the schedule by hand, then the revision runs again.
    cron_db.execute("SELECT cron.alter_job(%s, schedule => '0 * * * *')", (first,))
    cron_db.execute("DROP MATERIALIZED VIEW otel_trace_summaries")
    cron_db.migrate("stamp", FIRST)
    cron_db.migrate("upgrade", "head")

    with cron_db.connect() as conn:
        jobs = conn.execute(
            "SELECT jobid, schedule FROM cron.job WHERE command LIKE %s",
            (f"%{cron_db.schema}.otel_trace_summaries%",),
        ).fetchall()
    assert jobs == [(first, "*/2 * * * *")]


def test_sql_script_applies_with_psql_and_matches_an_online_upgrade(cron_db: Database, tmp_path):
    """``alembic upgrade head --sql`` needs no database, and psql applying it schedules the job."""
    script = tmp_path / "upgrade.sql"
    offline = run_alembic("upgrade", "head", "--sql", database_url=None)
    script.write_text(offline.stdout)
    assert "PERFORM cron.schedule(job_name, schedule, refresh)" in offline.stdout

    applied = psql(cron_db.url, "-f", str(script))

    assert "scheduled" in applied.stderr
    assert summary_objects(cron_db) == {
        "views": 1,
        "indexes": sorted(SUMMARY_INDEXES),
        "jobs": 1,
    }
    assert cron_db.version() == HEAD

    downgrade = tmp_path / "downgrade.sql"
    downgrade.write_text(
        run_alembic("downgrade", f"{HEAD}:{FIRST}", "--sql", database_url=None).stdout
    )
    psql(cron_db.url, "-f", str(downgrade))
    assert summary_objects(cron_db) == {"views": 0, "indexes": [], "jobs": 0}


def test_sql_script_without_pg_cron_creates_the_view_and_says_manual_refresh(
    nocron_db: Database, tmp_path
):
    script = tmp_path / "upgrade.sql"
    script.write_text(run_alembic("upgrade", "head", "--sql", database_url=None).stdout)
    applied = psql(nocron_db.url, "-f", str(script))
    assert "manual refresh is required" in applied.stderr
    assert summary_objects(nocron_db) == {
        "views": 1,
        "indexes": sorted(SUMMARY_INDEXES),
        "jobs": 0,
    }


def test_an_existing_trace_store_is_adopted_with_its_spans(db: Database):
    db.execute(
        "CREATE TABLE otel_traces (timestamp timestamptz NOT NULL, trace_id text, span_id text, "
        "parent_span_id text, name text, kind integer, start_time_unix_nano bigint, "
        "end_time_unix_nano bigint, service_name text, service_version text, "
        "service_instance text, scope_name text, scope_version text, status_code integer, "
        "status_message text, attributes text, resource_attributes text, events text, "
        "links text, created_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (timestamp, trace_id, span_id))"
    )
    db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'kept', 'root', 'GET /')"
    )
    upgrade = db.migrate("upgrade", "head")
    assert "adopting it as it is" in upgrade
    assert db.scalar("SELECT count(*) FROM otel_trace_summaries") == 1

    downgrade = db.migrate("downgrade", "base")
    assert "adopted, not created" in downgrade
    assert db.scalar("SELECT count(*) FROM otel_traces") == 1


def test_downgrade_to_base_keeps_spans_unless_told_to_drop_them(db: Database):
    db.migrate("upgrade", "head")
    db.execute("INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 't', 's')")
    refused = db.alembic("downgrade", "base", check=False)
    assert_one_clear_line(refused, "otel_traces holds spans", "drop_trace_data=yes")
    assert last_line(refused).startswith("alembic: migration failed")
    # All or nothing: the refused step left revision 1 in place.
    assert db.scalar("SELECT count(*) FROM otel_traces") == 1

    db.migrate("downgrade", "base", x={"drop_trace_data": "yes"})
    assert db.scalar("SELECT to_regclass('otel_traces')") is None


def test_a_foreign_otel_trace_summaries_stops_the_upgrade_with_advice(db: Database):
    db.migrate("upgrade", FIRST)
    db.execute("CREATE MATERIALIZED VIEW otel_trace_summaries AS SELECT 1 AS trace_id")
    result = db.alembic("upgrade", "head", check=False)
    assert_one_clear_line(
        result, "was not created by this project", "DROP MATERIALIZED VIEW otel_trace_summaries"
    )
    assert db.version() == FIRST


def test_asking_an_installed_database_for_the_other_mode_warns_and_names_the_switch(db: Database):
    db.migrate("upgrade", "head")
    result = db.alembic("-x", "summaries=incremental", "upgrade", "head")
    warning = next(line for line in result.stderr.splitlines() if "installed in view mode" in line)
    assert warning.startswith("WARNING")
    assert "trace-summaries switch incremental" in warning
    assert "installed in" not in db.alembic("-x", "summaries=view", "upgrade", "head").stderr


@pytest.mark.parametrize("mode", ["view", "incremental"])
def test_the_jobs_command_refreshes_whatever_the_sessions_search_path(db: Database, mode):
    """PostgreSQL 17 and later refresh a materialized view with search_path = pg_catalog,
    pg_temp; pg_cron's sessions start with the default. Neither may matter."""
    db.migrate("upgrade", "head", x={"summaries": mode})
    db.execute("INSERT INTO otel_traces (timestamp, trace_id, span_id) VALUES (now(), 't', 's')")
    with db.connect(autocommit=True) as conn:
        command = conn.execute(
            f"SELECT {COMMANDS[mode].format(schema='current_schema()')}"
        ).fetchone()[0]
        conn.execute("SET search_path = pg_catalog, pg_temp")
        conn.execute(command)
        assert conn.execute("SELECT count(*) FROM public.otel_trace_summaries").fetchone() == (1,)
