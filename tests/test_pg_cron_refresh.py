"""pg_cron really runs the refresh job, and new spans reach the view.

This waits for the next scheduled minute divisible by two (at most about two
minutes), so it is marked slow; it still runs in CI.
"""

from __future__ import annotations

import pytest

from tests.conftest import Database, first_run_after


@pytest.mark.slow
def test_pg_cron_runs_the_refresh_job_and_new_spans_appear_in_the_view(cron_db: Database):
    cron_db.alembic("upgrade", "head")
    jobid = cron_db.scalar("SELECT jobid FROM cron.job WHERE jobname = %s", (cron_db.job_name,))
    assert jobid is not None
    assert cron_db.scalar("SELECT count(*) FROM otel_trace_summaries") == 0

    inserted_at = cron_db.scalar(
        "INSERT INTO otel_traces (timestamp, trace_id, span_id, name, service_name, status_code) "
        "VALUES (now(), 'late-trace', 'root', 'GET /late', 'frontend', 2) RETURNING now()"
    )
    run = first_run_after(cron_db.connect, jobid, inserted_at)

    assert run["status"] == "succeeded", run["return_message"]
    assert run["return_message"] == "REFRESH MATERIALIZED VIEW"
    with cron_db.connect() as conn:
        row = conn.execute(
            "SELECT root_span_name, span_count, error_count FROM otel_trace_summaries "
            "WHERE trace_id = 'late-trace'"
        ).fetchone()
    assert row == ("GET /late", 1, 1)
