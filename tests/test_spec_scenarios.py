"""One test per scenario of the spec (docs/cnpg-trace-summaries-spec.md), named after it.

Each runs the scenario's own statement (``\\d`` and ``\\di`` through psql, the
EXPLAIN ANALYZE queries verbatim, the cron.job query verbatim) against a real
server, on a schema that held 50,000 traces of spans before it was migrated.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest

from cnpg_trace_summaries.contract import REFRESH_SCHEDULE, SUMMARY_COLUMN_TYPES, SUMMARY_COLUMNS
from tests.support import ROOT
from tests.support.commands import psql as run_psql
from tests.support.cron import job_command
from tests.support.data import LISTING_DATA_SQL, LISTING_TRACES
from tests.support.database import Database, schema_in
from tests.support.revisions import FIRST, HEAD
from tests.support.roles import ROLE_PASSWORD, grant, login_role
from tests.support.servers import labels
from tests.support.stores import HYPERTABLE, PLAIN, prepare

SPEC_TIME_RANGE_QUERY = (
    "EXPLAIN ANALYZE SELECT * FROM otel_trace_summaries "
    "WHERE timestamp > NOW() - INTERVAL '1 hour' ORDER BY timestamp DESC LIMIT 100;"
)
SPEC_SERVICE_QUERY = (
    "EXPLAIN ANALYZE SELECT * FROM otel_trace_summaries "
    "WHERE root_service_name = 'my-service' ORDER BY timestamp DESC LIMIT 100;"
)
SPEC_CRON_QUERY = "SELECT * FROM cron.job WHERE command LIKE '%otel_trace_summaries%';"
SPEC_READ_QUERY = "SELECT * FROM otel_trace_summaries LIMIT 10;"
HYPERTABLE_SQL = """
SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'otel_traces')
"""


LAYOUTS = ("as_superuser", "as_app_owner", "as_app_owner_over_a_hypertable")


@pytest.fixture(
    scope="module",
    params=[(layout, label) for label in labels() for layout in LAYOUTS],
    ids=lambda param: "-".join(param),
)
def listing_db(request, server_pool) -> Iterator[Database]:
    """A pg_cron schema holding 50,000 traces of spans, then migrated to head.

    The spans are there before the migration runs, as in the spec's scenario
    "the migration runs against a CNPG cluster with existing trace data". Once
    as the superuser, once as CNPG's kind of `app` user: a non-superuser that
    owns its schema and may use schema cron; and once more as `app` where
    TimescaleDB is installed, so that revision 1 makes otel_traces a hypertable.
    """
    layout, label = request.param
    hypertable = layout.endswith("hypertable")
    server = (server_pool.timescaledb if hypertable else server_pool.cron)(label)
    with ExitStack() as stack:
        owner = password = None
        if layout != "as_superuser":
            owner = stack.enter_context(login_role(server, databases=(server.cron_database,)))
            password = ROLE_PASSWORD
            grant(server, server.cron_database, "GRANT USAGE ON SCHEMA cron TO {}", owner)
        prepare(server, server.cron_database, HYPERTABLE if hypertable else PLAIN)
        database = stack.enter_context(schema_in(server, server.cron_database, owner, password))
        database.migrate("upgrade", FIRST)
        if hypertable:
            assert database.scalar(HYPERTABLE_SQL)
        database.execute(LISTING_DATA_SQL)
        database.execute("ANALYZE otel_traces")
        database.notices = database.migrate("upgrade", "head")
        yield database


def psql(database: Database, command: str) -> str:
    return run_psql(database.url, "-c", command).stdout


def plan(database: Database, explain: str) -> str:
    with database.connect() as conn:
        return "\n".join(row[0] for row in conn.execute(explain).fetchall())


# -- Requirement: pre-computed trace summaries via materialized view -------------
def test_materialized_view_exists_after_migration(listing_db: Database):
    """count(*) is non-zero and equals the unique trace_ids of the last 7 days."""
    migration = ROOT / f"alembic/versions/{HEAD}_trace_summaries_mv.py"
    assert migration.is_file()
    assert listing_db.version() == HEAD

    count = listing_db.scalar("SELECT count(*) FROM otel_trace_summaries;")
    unique_recent = listing_db.scalar(
        "SELECT count(DISTINCT trace_id) FROM otel_traces "
        "WHERE timestamp > now() - interval '7 days' AND trace_id <> ''"
    )
    assert count > 0
    assert count == unique_recent == LISTING_TRACES
    # The 1,000 stale traces and the spans without a trace id are in the table, not the view.
    assert listing_db.scalar("SELECT count(DISTINCT trace_id) FROM otel_traces") == (
        LISTING_TRACES + 1_000 + 1
    )


def test_materialized_view_has_required_columns(listing_db: Database):
    r"""``\d otel_trace_summaries`` lists exactly the spec's 14 columns."""
    described = psql(listing_db, r"\d otel_trace_summaries")
    assert re.search(r'Materialized view "[^"]+\.otel_trace_summaries"', described)
    rows = [line.split("|") for line in described.splitlines() if line.count("|") >= 2]
    names = [cells[0].strip() for cells in rows[1:]]  # rows[0] is the header
    assert tuple(names) == SUMMARY_COLUMNS

    column_types = dict(
        listing_db.rows(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'otel_trace_summaries'::regclass AND attnum > 0"
        )
    )
    assert column_types == SUMMARY_COLUMN_TYPES


def test_materialized_view_has_unique_index_for_concurrent_refresh(listing_db: Database):
    r"""``\di idx_trace_summaries_trace_id`` shows a unique index on trace_id, and
    REFRESH MATERIALIZED VIEW CONCURRENTLY works with it."""
    shown = psql(listing_db, r"\di idx_trace_summaries_trace_id")
    assert "idx_trace_summaries_trace_id" in shown
    assert "otel_trace_summaries" in shown
    # \di lists the index; \d on it spells out what it is.
    detail = psql(listing_db, r"\d idx_trace_summaries_trace_id")
    assert "unique, btree, for table" in detail
    assert re.search(r"^ trace_id\s*\|", detail, re.MULTILINE)

    with listing_db.connect() as conn:
        unique, predicate, columns = conn.execute(
            "SELECT i.indisunique, i.indpred IS NOT NULL, "
            "       array_agg(a.attname ORDER BY k.ord) "
            "FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indexrelid = 'idx_trace_summaries_trace_id'::regclass "
            "GROUP BY i.indisunique, i.indpred"
        ).fetchone()
    assert unique is True
    assert predicate is False
    assert columns == ["trace_id"]
    assert "UNIQUE" in listing_db.scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_trace_summaries_trace_id'"
    )
    listing_db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries")


def test_materialized_view_has_timestamp_index_for_time_range_queries(listing_db: Database):
    """The spec's time-range query is an Index Scan on idx_trace_summaries_timestamp."""
    assert listing_db.scalar("SELECT count(*) FROM otel_trace_summaries") >= 50_000
    explained = plan(listing_db, SPEC_TIME_RANGE_QUERY)
    assert "Index Scan using idx_trace_summaries_timestamp on otel_trace_summaries" in explained
    assert "Seq Scan" not in explained


def test_materialized_view_has_service_index_for_filtered_queries(listing_db: Database):
    """The spec's service query is an Index Scan on idx_trace_summaries_service_timestamp."""
    assert (
        listing_db.scalar(
            "SELECT count(*) FROM otel_trace_summaries WHERE root_service_name = 'my-service'"
        )
        > 0
    )
    explained = plan(listing_db, SPEC_SERVICE_QUERY)
    assert (
        "Index Scan using idx_trace_summaries_service_timestamp on otel_trace_summaries"
        in explained
    )
    assert "Seq Scan" not in explained


# -- Requirement: refreshed periodically -----------------------------------------
def test_pg_cron_job_exists_for_mv_refresh(listing_db: Database):
    """The spec's cron.job query returns the */2 job running the concurrent refresh."""
    with listing_db.connect() as conn:
        cur = conn.execute(SPEC_CRON_QUERY)
        columns = [column.name for column in cur.description]
        jobs = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    ours = [job for job in jobs if job["jobname"] == listing_db.job_name]
    assert len(ours) == 1
    job = ours[0]
    assert job["schedule"] == REFRESH_SCHEDULE == "*/2 * * * *"
    # Schema-qualified, because pg_cron runs each job in a fresh session.
    assert job["command"] == (
        f"REFRESH MATERIALIZED VIEW CONCURRENTLY {listing_db.schema}.otel_trace_summaries"
    )
    assert job["database"] == listing_db.dbname
    assert job["active"] is True
    assert "pg_cron job" in listing_db.notices


def test_mv_refresh_completes_without_blocking_reads(listing_db: Database):
    """A read during the job's refresh returns at once, while the refresh holds its lock."""
    command = job_command(listing_db, listing_db.job_name)
    refresher = listing_db.connect()  # a transaction, so the refresh's lock stays held
    try:
        refresher.execute(command)
        refresher_pid = refresher.info.backend_pid
        with listing_db.connect(autocommit=True) as observer:
            held = observer.execute(
                "SELECT mode, granted FROM pg_locks "
                "WHERE pid = %s AND relation = 'otel_trace_summaries'::regclass",
                (refresher_pid,),
            ).fetchall()
        assert ("ExclusiveLock", True) in held

        with listing_db.connect(autocommit=True) as reader:
            # Waiting for the refresh's lock would raise LockNotAvailable.
            reader.execute("SET lock_timeout = '2s'")
            rows = reader.execute(SPEC_READ_QUERY).fetchall()
        assert len(rows) == 10
        # The refresh still holds its lock: the read did not wait for it to finish.
        assert refresher.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        refresher.commit()
        refresher.close()


def test_mv_refresh_completes_without_blocking_reads_while_refresh_runs(listing_db: Database):
    """Reads keep answering while a real (uncommitted-until-done) refresh is running."""
    command = job_command(listing_db, listing_db.job_name)
    done = threading.Event()

    refreshed = []

    def refresh_repeatedly():
        with listing_db.connect(autocommit=True) as conn:
            while not done.is_set():
                conn.execute(command)
                refreshed.append(True)

    worker = threading.Thread(target=refresh_repeatedly)
    worker.start()
    try:
        with listing_db.connect(autocommit=True) as reader:
            # Waiting for a refresh's lock would raise LockNotAvailable.
            reader.execute("SET lock_timeout = '2s'")
            reads = 0
            while (len(refreshed) < 3 and worker.is_alive()) or reads < 50:
                assert len(reader.execute(SPEC_READ_QUERY).fetchall()) == 10
                reads += 1
    finally:
        done.set()
        worker.join()
    assert len(refreshed) >= 3


def test_mv_refresh_handles_missing_pg_cron_gracefully(nocron_db: Database):
    """No pg_cron: the view is created, no job, and a NOTICE says manual refresh is required."""
    nocron_db.migrate("upgrade", FIRST)
    nocron_db.execute(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name) "
        "VALUES (now(), 'abc', 'root', 'GET /')"
    )
    result = nocron_db.alembic("upgrade", "head")

    assert (
        nocron_db.scalar(
            "SELECT count(*) FROM pg_matviews WHERE matviewname = 'otel_trace_summaries'"
        )
        == 1
    )
    assert nocron_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 1
    assert nocron_db.scalar("SELECT to_regclass('cron.job')") is None
    assert nocron_db.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'") == 0
    notice = [line for line in result.stderr.splitlines() if "manual refresh is required" in line]
    assert len(notice) == 1, result.stderr
    assert "NOTICE" in notice[0]
    # A view that is never refreshed must not pass unseen: logged at WARNING.
    assert notice[0].startswith("WARNING")
    assert "REFRESH MATERIALIZED VIEW CONCURRENTLY public.otel_trace_summaries" in notice[0]
    assert "trace-summaries refresh" in notice[0]


def test_spec_file_is_the_one_these_tests_follow():
    """Guard: the scenario statements above are the spec's, verbatim (docs/ keeps a copy)."""
    text = (ROOT / "docs" / "cnpg-trace-summaries-spec.md").read_text()
    for statement in (SPEC_TIME_RANGE_QUERY, SPEC_SERVICE_QUERY, SPEC_CRON_QUERY, SPEC_READ_QUERY):
        assert statement in text
    assert f"{HEAD}_trace_summaries_mv" in text
