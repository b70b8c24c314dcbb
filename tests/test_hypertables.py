"""otel_traces as a TimescaleDB hypertable (2.28.3, on every major version), in both modes.

The store holds ten days of spans in chunks of a day: chunks wholly before the
7-day window, one across its boundary, and chunks inside it. Compression is
segmented by service_name, as a pipeline's would be, so that a DELETE on
service_name removes whole compressed segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest

from cnpg_trace_summaries.contract import (
    CAPTURE_ROW_TRIGGERS,
    DIRTY_TABLE,
    SUMMARIES,
    TRACE_INDEXES_FOR_SUMMARIES,
)
from cnpg_trace_summaries.sql.summary import WINDOW, window_query
from tests.support.adoption import COLLECTOR_TABLE_SQL, LOAD_SQL, indexes
from tests.support.commands import run_cli
from tests.support.data import Ingest
from tests.support.database import Database
from tests.support.incremental import assert_exact, differences, refresh
from tests.support.processes import finish, hold_migration_lock, start_alembic, waiting_migrations
from tests.support.revisions import HEAD

DAYS = 10
TRACES = 6_000  # four spans each, one trace every 2.4 minutes over ten days

SPANS_SQL = f"""
INSERT INTO otel_traces ("timestamp", trace_id, span_id, parent_span_id, name, kind,
    start_time_unix_nano, end_time_unix_nano, service_name, status_code)
SELECT x.ts + s * interval '1 millisecond', 'tr' || lpad(CAST(t AS text), 6, '0'), 'span' || s,
       CASE WHEN s = 0 THEN NULL ELSE 'span0' END,
       CASE WHEN s = 0 THEN 'GET /' || t % 7 ELSE 'call-' || s END, 2,
       x.ns + s, x.ns + 1000000 - s,
       (ARRAY['api', 'cart', 'db'])[1 + (t + s) % 3],
       CASE WHEN t % 10 = 0 AND s = 1 THEN 2 ELSE 0 END
FROM generate_series(1, {TRACES}) AS t
CROSS JOIN LATERAL (
    SELECT now() - t * interval '{DAYS * 24 * 60 / TRACES} minutes' AS ts,
           CAST(t AS bigint) * 1000000000 AS ns
) AS x
CROSS JOIN generate_series(0, 3) AS s
"""
COMPRESSION_SQL = (
    "ALTER TABLE otel_traces SET (timescaledb.compress, "
    "timescaledb.compress_segmentby = 'service_name', "
    "timescaledb.compress_orderby = '\"timestamp\" DESC')"
)
CHUNKS_SQL = """
SELECT format('%I.%I', chunk_schema, chunk_name), range_end, is_compressed
FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema() AND hypertable_name = 'otel_traces'
ORDER BY range_end
"""
BEFORE_THE_WINDOW = f"range_end <= now() - interval '{WINDOW}'"
ROW_DELETE_TRIGGER = CAPTURE_ROW_TRIGGERS["DELETE"]


def committed(database: Database, query: str, params: object = None):
    """The first value of ``query``'s first row, run in a transaction of its own, committed."""
    with database.connect(autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


def chunks(database: Database, where: str = "true") -> list[tuple]:
    return database.rows(f"SELECT * FROM ({CHUNKS_SQL}) AS c({'name, range_end, compressed'}) "
                         f"WHERE {where}")  # fmt: skip


def compress(database: Database, older_than: str = "1 day") -> int:
    return committed(
        database,
        "SELECT count(compress_chunk(c, if_not_compressed => true)) "
        "FROM show_chunks('otel_traces', older_than => CAST(%s AS interval)) AS c",
        (older_than,),
    )


def run_policy(database: Database, add: str, older_than: str) -> None:
    """Add a TimescaleDB policy, run its job once in the foreground, and remove it."""
    job = committed(database, f"SELECT {add}('otel_traces', CAST(%s AS interval))", (older_than,))
    with database.connect(autocommit=True) as conn:
        conn.execute("CALL run_job(%s)", (job,))
        conn.execute("SELECT delete_job(%s)", (job,))


def with_delete_capture(database: Database) -> set[str]:
    """The chunks that carry the row DELETE capture trigger."""
    return {
        name
        for (name,) in database.rows(
            "SELECT CAST(tgrelid AS regclass)::text FROM pg_trigger "
            "WHERE tgname = %s AND tgrelid <> CAST('otel_traces' AS regclass)",
            (ROW_DELETE_TRIGGER,),
        )
    }


@pytest.fixture
def hyper(timescaledb_db: Database) -> Iterator[Database]:
    """otel_traces created by revision 1 as a hypertable, ten days of spans in it."""
    timescaledb_db.migrate("upgrade", "00000000000001")
    timescaledb_db.execute(SPANS_SQL)
    yield timescaledb_db


# -- a fresh install --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["view", "incremental"])
def test_a_fresh_install_makes_otel_traces_a_hypertable_in_chunks_of_a_day(
    timescaledb_db: Database, mode: str
):
    timescaledb_db.migrate("upgrade", "head", x={"summaries": mode})
    assert timescaledb_db.rows(
        "SELECT time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = 'otel_traces'"
    ) == [(timescaledb_db.scalar("SELECT interval '1 day'"),)]
    # No index of TimescaleDB's own: the primary key leads with "timestamp" already.
    assert (
        timescaledb_db.scalar(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'otel_traces' "
            "AND indexname = 'otel_traces_timestamp_idx'"
        )
        == 0
    )
    timescaledb_db.execute(SPANS_SQL)
    assert len(chunks(timescaledb_db)) >= DAYS
    with timescaledb_db.connect(autocommit=True) as conn:
        if mode == "incremental":
            refresh(conn)
            assert_exact(conn)
        else:
            with conn.transaction():
                conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SUMMARIES}")
                assert differences(conn) == (0, 0)
    timescaledb_db.migrate("downgrade", "base", x={"drop_trace_data": "yes"})
    assert timescaledb_db.scalar("SELECT to_regclass('otel_traces')") is None


# -- adopting a collector's hypertable ------------------------------------------------------------
ADOPTED_TRACES = 100_000  # ten spans each, one trace every 5 s: a million spans over six days
COLLECTOR_HYPERTABLE_SQL = (
    COLLECTOR_TABLE_SQL,
    # TimescaleDB's own default index, ("timestamp" DESC), and nothing else
    "SELECT create_hypertable('otel_traces', by_range('timestamp', interval '1 day'))",
)
TRACE_ID_INDEX = TRACE_INDEXES_FOR_SUMMARIES[0][0]
# Every chunk's valid indexes that lead with trace_id, against its count of chunks.
CHUNKS_INDEXED_SQL = """
SELECT count(DISTINCT i.indrelid) FILTER (WHERE i.indisvalid AND a.attname = 'trace_id'),
       (SELECT count(*) FROM show_chunks('otel_traces'))
FROM pg_index AS i
JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid IN (SELECT show_chunks('otel_traces'))
"""


def collector_hypertable(database: Database, traces: int) -> None:
    with database.connect(autocommit=True) as conn:
        for statement in COLLECTOR_HYPERTABLE_SQL:
            conn.execute(statement)
        conn.execute(LOAD_SQL.format(traces=traces))
        conn.execute("VACUUM ANALYZE otel_traces")


def test_two_upgrades_adopt_a_busy_hypertable_together_and_no_insert_fails_or_waits_long(
    timescaledb_db: Database, report
):
    """A million spans in chunks of a day, TimescaleDB's default index only, a collector
    inserting one span at a time under lock_timeout = 200ms, two `alembic upgrade head`."""
    collector_hypertable(timescaledb_db, ADOPTED_TRACES)
    before = timescaledb_db.scalar("SELECT count(*) FROM otel_traces")
    assert before >= 1_000_000
    with Ingest(timescaledb_db.url) as ingest:
        with hold_migration_lock(timescaledb_db, "the gate"):
            runs = [start_alembic(timescaledb_db, "upgrade", "head") for _ in range(2)]
            waiting_migrations(timescaledb_db, 2)
        results = [finish(run) for run in runs]
    report(ingest.describe("two upgrades adopting a 1M-span hypertable"))
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert ingest.errors == []
    # The index ON ONLY the hypertable (catalog only) is the one lock an insert may meet.
    assert set(ingest.lock_waits) <= {"relation otel_traces"}, ingest.lock_waits
    assert len(ingest.latencies) > 20
    assert timescaledb_db.scalar("SELECT count(*) FROM otel_traces") == before + len(
        ingest.trace_ids
    )
    assert indexes(timescaledb_db)[TRACE_ID_INDEX]["valid"]
    indexed, total = timescaledb_db.rows(CHUNKS_INDEXED_SQL)[0]
    assert indexed == total >= 6
    assert timescaledb_db.version() == HEAD
    assert timescaledb_db.scalar(f"SELECT count(*) FROM {SUMMARIES}") > 0


def test_an_adopted_hypertable_with_a_usable_index_needs_no_build(timescaledb_db: Database):
    collector_hypertable(timescaledb_db, 2_000)
    timescaledb_db.execute('CREATE INDEX spans_by_trace ON otel_traces (trace_id, "timestamp")')
    before = set(indexes(timescaledb_db))
    timescaledb_db.migrate("upgrade", "head")
    assert set(indexes(timescaledb_db)) == before


# -- the view mode ----------------------------------------------------------------------------
def test_the_view_refreshes_concurrently_over_compressed_chunks_and_scans_only_the_window(
    hyper: Database,
):
    hyper.migrate("upgrade", "head")
    hyper.execute(COMPRESSION_SQL)
    assert compress(hyper) >= DAYS - 1
    with hyper.connect(autocommit=True) as conn, conn.transaction():
        conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SUMMARIES}")
        assert differences(conn) == (0, 0)
        # The view's definition, as its refresh runs it: the chunks wholly before
        # the window are excluded when the scan starts (now() is known then).
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                + window_query().replace("@schema@.", "")
            )
        )
        old = chunks(hyper, BEFORE_THE_WINDOW)
    assert old, "ten days of spans leave chunks before the window"
    assert f"Chunks excluded during startup: {len(old)}" in plan, plan
    assert not any(name.split(".")[1] in plan for name, *_ in old), plan


# -- the incremental mode ----------------------------------------------------------------------
@pytest.fixture
def compressed(hyper: Database) -> Iterator[psycopg.Connection]:
    """The incremental mode over the hypertable; compression on, chunks a day old compressed."""
    hyper.migrate("upgrade", "head", x={"summaries": "incremental"})
    hyper.execute(COMPRESSION_SQL)  # no DELETE trigger with a transition table stands in its way
    assert compress(hyper) >= DAYS - 1
    with hyper.connect(autocommit=True) as conn:
        refresh(conn)
        assert_exact(conn)
        yield conn


def dirty(conn: psycopg.Connection) -> int:
    return conn.execute(f"SELECT count(*) FROM {DIRTY_TABLE}").fetchone()[0]


def refreshed_exactly(conn: psycopg.Connection) -> dict:
    outcome = refresh(conn)
    assert outcome["refreshed"] and outcome["kind"] == "incremental", outcome
    assert_exact(conn)
    return outcome


def test_compressing_and_decompressing_chunks_changes_no_span_and_costs_no_recompute(
    compressed, hyper
):
    for operation in (
        lambda: compress(hyper, "1 hour"),
        lambda: hyper.execute("SELECT decompress_chunk(%s)", (chunks(hyper)[-3][0],)),
        lambda: run_policy(hyper, "add_compression_policy", "1 day"),
    ):
        operation()
        assert dirty(compressed) == 0
        assert refreshed_exactly(compressed)["keys"] == 0


def test_writes_into_compressed_chunks_are_captured_exactly(compressed, hyper):
    three_days_ago = chunks(hyper, "range_end < now() - interval '2 days'")[-1]
    assert three_days_ago[2], "the chunk written to is compressed"
    writes = {
        "a late span of a summarized trace": """INSERT INTO otel_traces
            ("timestamp", trace_id, span_id, name, kind, service_name, status_code)
            SELECT "timestamp" + interval '1 second', trace_id, 'late', 'late', 1, 'api', 2
            FROM otel_traces WHERE "timestamp" < now() - interval '3 days' LIMIT 1""",
        "an UPDATE": """UPDATE otel_traces SET status_code = 2, name = 'updated'
            WHERE "timestamp" BETWEEN now() - interval '4 days' AND now() - interval '3 days'
              AND span_id = 'span2'""",
        "a DELETE by rows": """DELETE FROM otel_traces
            WHERE trace_id IN (SELECT trace_id FROM otel_traces
                               WHERE "timestamp" < now() - interval '5 days' LIMIT 7)""",
        "a DELETE of whole segments": """DELETE FROM otel_traces
            WHERE service_name = 'cart'
              AND "timestamp" BETWEEN now() - interval '6 days' AND now() - interval '2 days'""",
    }
    for what, statement in writes.items():
        hyper.execute(statement)
        assert dirty(compressed) > 0, what
        assert refreshed_exactly(compressed)["keys"] > 0, what


def test_chunks_before_the_window_lose_the_delete_capture_so_retention_deletes_capture_nothing(
    compressed, hyper
):
    old = {name for name, *_ in chunks(hyper, BEFORE_THE_WINDOW)}
    assert old and not old & with_delete_capture(hyper)
    assert with_delete_capture(hyper) == {name for name, *_ in chunks(hyper)} - old
    # Retention by DELETE: whole compressed batches go, nothing is captured.
    deleted = committed(
        hyper,
        "WITH gone AS (DELETE FROM otel_traces WHERE \"timestamp\" < now() - interval "
        f"'{WINDOW}' - interval '1 day' RETURNING 1) SELECT count(*) FROM gone"
    )  # fmt: skip
    assert deleted > 0
    assert dirty(compressed) == 0
    refreshed_exactly(compressed)


def test_drop_chunks_and_retention_policies_before_the_window_cost_no_recompute(compressed, hyper):
    before = len(chunks(hyper))
    hyper.execute("SELECT drop_chunks('otel_traces', older_than => interval '9 days')")
    assert refreshed_exactly(compressed)["keys"] == 0
    run_policy(hyper, "add_retention_policy", "8 days")
    assert refreshed_exactly(compressed)["keys"] == 0
    assert len(chunks(hyper)) < before


def test_a_dropped_chunk_inside_the_window_is_reported_by_verify_and_repaired_by_a_full_refresh(
    compressed, hyper
):
    inside = chunks(
        hyper, "range_end BETWEEN now() - interval '5 days' AND now() - interval '3 days'"
    )
    hyper.execute(
        "SELECT drop_chunks('otel_traces', older_than => CAST(%s AS timestamptz), "
        "newer_than => CAST(%s AS timestamptz) - interval '1 day')",
        (inside[0][1], inside[0][1]),
    )
    result = run_cli("verify", DATABASE_URL=hyper.url)
    assert result.returncode != 0
    assert re.search(r"were dropped: .*" + re.escape(inside[0][0].split(".")[1]), result.stdout)
    assert run_cli("refresh", "--full", DATABASE_URL=hyper.url).returncode == 0
    assert run_cli("verify", DATABASE_URL=hyper.url).returncode == 0
    assert_exact(compressed)
