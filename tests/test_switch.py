"""`trace-summaries switch`: view to incremental and back, on a live database.

The new relation is built beside the old one and swapped in with one short
transaction: no insert fails, no span is missed, readers never wait more than
a second, grants survive, the pg_cron job follows the mode, and a switch
that was interrupted is repaired by switching again.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import psycopg
import pytest

from cnpg_trace_summaries import summaries
from cnpg_trace_summaries.contract import DEFAULT_CRON_DATABASE, SUMMARIES
from cnpg_trace_summaries.sql import incremental, view
from cnpg_trace_summaries.sql.common import NEXT, NEXT_SUFFIX
from cnpg_trace_summaries.sql.render import set_values
from tests.support import ROOT
from tests.support.commands import environment, switch
from tests.support.cron import JOB_COMMANDS, SCHEDULE_GRANTS, job_command, jobs_named
from tests.support.data import Ingest
from tests.support.database import Database
from tests.support.incremental import Reader, compare, differences, here, refresh, traces_sql
from tests.support.roles import ROLE_PASSWORD, grant, login_role
from tests.support.servers import PASSWORD, fresh_database, local_server

SWAPPED = re.compile(r"swapped in (\d+) ms")


def view_is_its_definition(conn: psycopg.Connection) -> tuple[int, int]:
    """Refresh the view, and compare it with its definition at the same snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SUMMARIES}")
        return differences(conn)


def summarized(conn: psycopg.Connection, trace_ids: list[str]) -> set[str]:
    rows = conn.execute(
        f"SELECT trace_id FROM {SUMMARIES} WHERE trace_id = ANY(%s)", (trace_ids,)
    ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def view_db(db: Database) -> Database:
    """The default install (the materialized view) over a few thousand traces."""
    db.migrate("upgrade", "head")
    db.execute(traces_sql("t", 2_000))
    db.execute(traces_sql("old", 100, age="8 days"))
    db.execute(f"REFRESH MATERIALIZED VIEW {SUMMARIES}")
    return db


def test_switching_both_ways_under_ingest_misses_no_span_and_readers_wait_under_a_second(
    view_db, report
):
    with login_role(view_db.server, "reader", databases=(view_db.dbname,)) as role:
        view_db.execute(f"GRANT SELECT ON {SUMMARIES} TO {role}")
        reader_db = view_db.as_role(role, ROLE_PASSWORD)
        with (
            view_db.connect(autocommit=True) as conn,
            Ingest(view_db.url) as ingest,
            Reader(reader_db.url) as reader,
        ):
            to_incremental = switch(view_db, "incremental")
            assert to_incremental.returncode == 0, to_incremental.stderr
            assert view_db.mode() == "incremental"
            written = list(ingest.trace_ids)
            refresh(conn)
            assert summarized(conn, written) == set(written)
            verified = summaries.verify(here(conn))  # while the ingest goes on
            assert verified.exact, verified

            to_view = switch(view_db, "view")
            assert to_view.returncode == 0, to_view.stderr
            assert view_db.mode() == "view"
            written = list(ingest.trace_ids)
            assert view_is_its_definition(conn) == (0, 0)
            assert summarized(conn, written) == set(written)
            assert conn.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT')", (role, SUMMARIES)
            ).fetchone() == (True,)
        assert ingest.errors == []
        assert reader.errors == []
        swaps = [SWAPPED.search(r.stdout).group(1) for r in (to_incremental, to_view)]
        report(
            f"swap to incremental {swaps[0]} ms, back to view {swaps[1]} ms; "
            f"{ingest.describe('both switches')}; readers: {reader.describe()}"
        )


def test_a_reader_holding_the_summaries_makes_the_swap_wait_not_the_ingest(view_db, report):
    assert switch(view_db, "incremental").returncode == 0
    with view_db.connect() as holder, Ingest(view_db.url) as ingest:
        holder.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone()  # a long report
        release = threading.Timer(2.5, holder.rollback)
        release.start()
        try:
            result = switch(view_db, "view")  # waits for the reader, retrying its swap
        finally:
            release.join()
    assert result.returncode == 0, result.stderr
    assert ingest.errors == []
    report(ingest.describe("a swap that waited for a reader"))


COLUMNS = f"""
SELECT attname, format_type(atttypid, atttypmod), attcollation
FROM pg_attribute WHERE attrelid = CAST('{SUMMARIES}' AS regclass) AND attnum > 0 ORDER BY attnum
"""


def test_both_modes_have_the_same_columns_down_to_their_collations(db):
    db.migrate("upgrade", "head")
    view_columns = db.rows(COLUMNS)
    db.migrate("downgrade", "-1")
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    assert db.rows(COLUMNS) == view_columns


def test_the_refresh_job_follows_the_mode(cron_db: Database):
    cron_db.migrate("upgrade", "head")
    name = cron_db.job_name

    def command() -> str:
        return job_command(cron_db, name)

    assert command() == JOB_COMMANDS["view"].format(schema=cron_db.schema)
    assert switch(cron_db, "incremental").returncode == 0
    assert command() == JOB_COMMANDS["incremental"].format(schema=cron_db.schema)
    assert switch(cron_db, "view").returncode == 0
    assert command() == JOB_COMMANDS["view"].format(schema=cron_db.schema)
    assert jobs_named(cron_db, name) == {name: 1}


def test_switching_to_the_mode_already_installed_changes_nothing_and_says_so(db):
    db.migrate("upgrade", "head")
    result = switch(db, "view")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "otel_trace_summaries is already in view mode: nothing to switch"
    )
    db.migrate("downgrade", "-1")
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    result = switch(db, "incremental")
    assert result.returncode == 0, result.stderr
    assert "already in incremental mode: nothing to switch" in result.stdout


# -- interrupted switches ----------------------------------------------------------------------
def run_statements(database: Database, statements: list[str]) -> None:
    """``statements`` (the package's, as a switch runs them) in one transaction."""
    values = {"refresh_interval": "2min"}
    with database.connect() as conn:
        conn.execute(set_values(values, "%({})s"), values)
        for statement in statements:
            conn.execute(statement)
        conn.commit()


# The capture triggers of a plain otel_traces, statement and row level.
CAPTURE_TRIGGERS = len(incremental.triggers_for(incremental.PLAIN_STORE))
# (a relation built beside, the incremental state table, triggers on otel_traces)
LEFTOVERS = f"""
SELECT to_regclass('{NEXT}') IS NOT NULL,
       to_regclass('{incremental.STATE_TABLE}') IS NOT NULL,
       (SELECT count(*) FROM pg_trigger
        WHERE tgrelid = to_regclass('otel_traces') AND NOT tgisinternal)
"""


def assert_switching_to_incremental_repairs_it(database: Database) -> None:
    result = switch(database, "incremental")
    assert result.returncode == 0, result.stderr
    with database.connect(autocommit=True) as conn:
        assert conn.execute(LEFTOVERS).fetchone() == (False, True, CAPTURE_TRIGGERS)
        outcome = compare(conn, with_rows=False)
        assert outcome.exact, outcome.describe()


def test_a_switch_to_incremental_interrupted_before_the_swap_is_repaired_by_switching_again(
    view_db,
):
    # What the first steps of `switch incremental` leave: the machinery, part of the table.
    first_steps = [
        *incremental.create_machinery(),
        *incremental.create(NEXT, NEXT_SUFFIX),
        f"INSERT INTO {NEXT} (trace_id) VALUES ('half-built')",
    ]
    run_statements(view_db, first_steps)
    view_db.execute(traces_sql("after", 5))  # captured by the new triggers, read by nobody

    assert_switching_to_incremental_repairs_it(view_db)


def test_leftovers_of_a_switch_are_removed_by_switching_to_the_installed_mode(view_db):
    run_statements(
        view_db,
        [*incremental.create_machinery(), *incremental.create(NEXT, NEXT_SUFFIX)],
    )  # fmt: skip
    result = switch(view_db, "view")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"removed what an interrupted switch had left: {NEXT}, the incremental mode's "
        "triggers on otel_traces, functions and tables"
    )
    with view_db.connect(autocommit=True) as conn:
        assert conn.execute(LEFTOVERS).fetchone() == (False, False, 0)
        assert view_is_its_definition(conn) == (0, 0)


def test_a_switch_to_view_interrupted_before_the_swap_is_repaired_by_switching_again(view_db):
    assert switch(view_db, "incremental").returncode == 0
    # Built, never swapped:
    run_statements(view_db, view.create(NEXT, NEXT_SUFFIX))
    result = switch(view_db, "view")
    assert result.returncode == 0, result.stderr
    with view_db.connect(autocommit=True) as conn:
        assert conn.execute(LEFTOVERS).fetchone() == (False, False, 0)
        assert view_is_its_definition(conn) == (0, 0)


def test_a_killed_switch_is_repaired_by_switching_again(db):
    db.migrate("upgrade", "head")
    db.execute(traces_sql("t", 20_000))  # a build that lasts a moment
    command = [sys.executable, "-m", "cnpg_trace_summaries.cli", "-v", "switch", "incremental"]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment(DATABASE_URL=db.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as cli:
        for line in cli.stderr:
            if "capture triggers on otel_traces in place" in line:
                cli.kill()  # while it builds the new table
                break
        cli.wait()
    assert db.mode() == "view"
    with db.connect(autocommit=True) as conn:
        assert conn.execute(LEFTOVERS).fetchone()[1:] == (True, CAPTURE_TRIGGERS)  # no swap

    assert_switching_to_incremental_repairs_it(db)


# -- the job where pg_cron lives in another database ----------------------------------------------
@pytest.fixture
def cnpg_app(cron_server):
    """CNPG's default layout: pg_cron in postgres, `app` may schedule there, reads no settings."""
    with (
        local_server(
            "switch-cnpg",
            cron_server.install,
            pg_cron_database=DEFAULT_CRON_DATABASE,
            password=PASSWORD,
        ) as cluster,
        login_role(cluster, databases=(DEFAULT_CRON_DATABASE,)) as role,
        fresh_database(cluster, "app", owner=role) as name,
    ):
        yield cluster, Database(cluster, name, user=role, password=ROLE_PASSWORD)


def command_in_postgres(cluster, database: Database) -> str | None:
    """The command of ``database``'s job in the cron.job of ``cluster``'s postgres database."""
    return job_command(Database(cluster, DEFAULT_CRON_DATABASE), database.job_name)


def test_in_cnpgs_default_layout_the_job_in_postgres_follows_the_mode(cnpg_app):
    cluster, app = cnpg_app
    grant(cluster, DEFAULT_CRON_DATABASE, SCHEDULE_GRANTS, app.role, app.role)
    app.migrate("upgrade", "head")
    assert command_in_postgres(cluster, app).startswith("REFRESH MATERIALIZED VIEW CONCURRENTLY")
    result = switch(app, "incremental")
    assert result.returncode == 0, result.stderr
    assert command_in_postgres(cluster, app) == JOB_COMMANDS["incremental"].format(schema="public")
    assert switch(app, "view").returncode == 0
    assert command_in_postgres(cluster, app).startswith("REFRESH MATERIALIZED VIEW CONCURRENTLY")


def test_a_switch_that_cannot_move_the_job_fails_and_says_the_job_still_runs_the_old_command(
    cnpg_app,
):
    cluster, app = cnpg_app
    grant(cluster, DEFAULT_CRON_DATABASE, SCHEDULE_GRANTS, app.role, app.role)
    app.migrate("upgrade", "head")
    grant(cluster, DEFAULT_CRON_DATABASE, "REVOKE USAGE ON SCHEMA cron FROM {}", app.role)
    result = switch(app, "incremental")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("trace-summaries: switched otel_trace_summaries to incremental mode")
    assert "still runs the view mode's command" in line
    assert "username => " in line  # the statement an administrator can run for the role
    assert app.mode() == "incremental"
