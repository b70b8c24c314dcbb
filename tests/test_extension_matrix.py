"""The matrix the suites run on: each major version with TimescaleDB and its own pg_cron.

PostgreSQL 15 has Debian's pg_cron 1.4 (minutes only), 18 the pg_cron 1.6.7 that
``make extensions`` builds (schedules in seconds too); both have the full
TimescaleDB 2.28.3 build, whose ``tsl/`` has compression and retention policies.
"""

from __future__ import annotations

import psycopg
import pytest

from cnpg_trace_summaries.dev.extensions import PG_CRON, TIMESCALEDB
from tests.support.database import Database
from tests.support.processes import wait_for
from tests.support.servers import CRON_DATABASE, TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(
    bool(TEST_DATABASE_URL), reason="the matrix is that of the servers the tests start"
)

# The pg_cron release each major version runs: Debian's package on 15, the project's build on 18.
PG_CRON_RELEASES = {15: "1.4", 18: PG_CRON.release}

JOB_RUN = """
SELECT status, return_message FROM cron.job_run_details
WHERE jobid = %s AND status IN ('succeeded', 'failed') LIMIT 1
"""


def test_each_major_has_timescaledb_with_compression_and_its_pg_cron(
    timescaledb_server, timescaledb_db: Database
):
    db = timescaledb_db
    assert db.scalar("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") == (
        TIMESCALEDB.release
    )
    assert db.scalar("SHOW timescaledb.license") == "timescale"  # tsl/ is there
    assert db.scalar("SHOW timescaledb.telemetry_level") == "off"

    db.execute(
        "CREATE TABLE metrics (time timestamptz NOT NULL, device int, value double precision);"
        "SELECT create_hypertable('metrics', by_range('time', interval '1 day'));"
        "INSERT INTO metrics SELECT now() - i * interval '1 hour', i % 4, i"
        "  FROM generate_series(1, 100) i;"
        "ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')"
    )
    compressed = db.scalar(
        "SELECT count(compress_chunk(c))"
        " FROM show_chunks('metrics', older_than => interval '1 day') c"
    )
    assert compressed >= 1
    assert (
        db.scalar(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'metrics' AND is_compressed"
        )
        == compressed
    )
    assert db.scalar("SELECT count(*) FROM metrics") == 100
    assert db.scalar("SELECT add_retention_policy('metrics', interval '30 days')") is not None

    release = timescaledb_server.install.extension("pg_cron").release
    assert release.startswith(PG_CRON_RELEASES[timescaledb_server.major])
    cron = Database(timescaledb_server, CRON_DATABASE)
    extversion = cron.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
    schedule = "SELECT cron.schedule('matrix-seconds', '2 seconds', 'SELECT 1')"
    if extversion.startswith("1.4"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid schedule"):
            cron.execute(schedule)
        return
    jobid = cron.scalar(schedule)
    try:
        run = wait_for(cron, JOB_RUN, (jobid,), what="the 2-second pg_cron job to run", seconds=30)
    finally:
        cron.execute("SELECT cron.unschedule(%s)", (jobid,))
    assert run == ("succeeded", "SELECT 1")
