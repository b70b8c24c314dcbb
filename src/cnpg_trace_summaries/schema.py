"""Names of the schema objects the migrations create, for code that reads them.

The revisions keep their own frozen copies of these names (a revision never
imports application code); tests check that both agree with the database.
"""

from __future__ import annotations

TRACES_TABLE = "otel_traces"
SUMMARIES_VIEW = "otel_trace_summaries"

SUMMARY_INDEXES = (
    "idx_trace_summaries_trace_id",
    "idx_trace_summaries_timestamp",
    "idx_trace_summaries_service_timestamp",
)

# The 14 columns of otel_trace_summaries, in order.
SUMMARY_COLUMNS = (
    "trace_id",
    "timestamp",
    "root_span_id",
    "root_span_name",
    "root_service_name",
    "root_span_kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "duration_ms",
    "status_code",
    "status_message",
    "service_set",
    "span_count",
    "error_count",
)

# Columns of otel_traces a writer fills (created_at has a default).
SPAN_COLUMNS = (
    "timestamp",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "service_name",
    "service_version",
    "service_instance",
    "scope_name",
    "scope_version",
    "status_code",
    "status_message",
    "attributes",
    "resource_attributes",
    "events",
    "links",
)

REFRESH_SCHEDULE = "*/2 * * * *"
REFRESH_INTERVAL_SECONDS = 120
WINDOW_DAYS = 7

# OTLP status codes.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


def refresh_job_name(database: str, schema: str) -> str:
    """The pg_cron job name the migration uses (cron.job.jobname is a 63-byte name)."""
    return f"otel_trace_summaries:{database}.{schema}"[:63]
