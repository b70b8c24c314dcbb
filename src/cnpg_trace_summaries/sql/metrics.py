"""What a monitoring system reads, and what ``trace-summaries status`` judges on: one definition.

* :data:`METRICS`, the function ``otel_trace_summaries_metrics()``, installed
  with the summaries in both modes: one row of gauges about the summaries of
  its schema. It is cheap (estimates for counts, index-backed reads of the
  newest rows, catalog lookups), works on a hot standby, runs as its owner
  with its path pinned, and only its owner and ``pg_monitor`` may run it.
* :data:`CRON_METRICS`, a query for the database pg_cron lives in: each
  summaries job's last run, last success and interval, with the same notion
  of stale.

Stale means older than two refresh intervals (:data:`STALE_INTERVALS`), the
interval being the one the summaries' record names (or the job's schedule).
CloudNativePG's exporter runs both queries (deploy/cnpg/monitoring.yaml is
rendered from them), and ``trace-summaries status`` runs them too.
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import (
    DIRTY_TABLE,
    METRICS_FUNCTION,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    WINDOW,
)
from cnpg_trace_summaries.sql import incremental
from cnpg_trace_summaries.sql.common import (
    RECORDED_INTERVAL_SQL,
    RECORDED_MODE_SQL,
    seconds_sql,
)
from cnpg_trace_summaries.sql.render import (
    SCHEMA_LITERAL,
    do_block,
    in_schema,
    qualified,
)

STALE_INTERVALS = 2
# A backlog is counted up to this, then reported as "at least" (a bounded read).
BACKLOG_COUNTED_UP_TO = 10_000
MONITOR_ROLE = "pg_monitor"

# The metrics' columns: (name, type, Prometheus usage, what it is). The exporter's
# configuration (deploy/cnpg/monitoring.yaml) is rendered from this list.
COLUMNS = (
    ("mode", "text", "LABEL", "the installed mode: view or incremental"),
    ("refresh_interval_seconds", "float8", "GAUGE", "how often the job refreshes the summaries"),
    ("stale_after_seconds", "float8", "GAUGE",
     f"{STALE_INTERVALS} refresh intervals: older than this is stale"),
    ("lag_seconds", "float8", "GAUGE",
     "how long the oldest span the summaries do not show yet has waited"),
    ("newest_trace_age_seconds", "float8", "GAUGE", "age of the newest summarised trace"),
    ("newest_span_age_seconds", "float8", "GAUGE", "age of the newest span in the window"),
    ("estimated_rows", "float8", "GAUGE", "summary rows (the planner's estimate)"),
    ("populated", "float8", "GAUGE", "1 once the summaries have been filled"),
    ("installed_age_seconds", "float8", "GAUGE", "time since the install, switch or schedule"),
    ("last_refresh_age_seconds", "float8", "GAUGE",
     "incremental mode: time since the last refresh finished"),
    ("last_refresh_duration_seconds", "float8", "GAUGE",
     "incremental mode: how long the last refresh took"),
    ("last_refresh_full", "float8", "GAUGE",
     "incremental mode: 1 when the last refresh was a full rebuild"),
    ("backlog_traces", "float8", "GAUGE",
     f"incremental mode: changed traces queued (counted up to {BACKLOG_COUNTED_UP_TO:,})"),
    ("capture_enabled", "float8", "GAUGE",
     "incremental mode: 1 when every capture trigger is there and fires"),
    ("rebuild_pending", "float8", "GAUGE", "incremental mode: 1 while a full rebuild is pending"),
    ("rebuild_pending_seconds", "float8", "GAUGE",
     "incremental mode: how long a full rebuild has been pending"),
    ("skipped_refreshes", "float8", "GAUGE",
     "incremental mode: refreshes skipped since the last one that ran"),
    ("refresh_lock_stuck", "float8", "GAUGE",
     "1 when a session that is not refreshing holds the refresh lock"),
    ("stale", "float8", "GAUGE",
     "1 when the summaries are stale by the rules of trace-summaries status"),
)  # fmt: skip
METRIC_NAMES = tuple(name for name, _, _, _ in COLUMNS)


def _capture_check() -> str:
    """SQL: whether every capture trigger the store needs is there and fires (over store, traces)."""

    def all_fire(store: str) -> str:
        return " AND ".join(
            f"EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = '{trigger.name}' "
            f"AND strpos('{trigger.accepted_states}', CAST(tgenabled AS text)) > 0)"
            for trigger in incremental.triggers_for(store)
        )

    return (
        f"CASE WHEN store = '{incremental.HYPERTABLE}' THEN {all_fire(incremental.HYPERTABLE)}\n"
        f"             ELSE {all_fire(incremental.PLAIN_STORE)} END"
    )


METRICS = incremental.function(
    METRICS_FUNCTION,
    "",
    "",
    "TABLE (" + ", ".join(f"{name} {kind}" for name, kind, _, _ in COLUMNS) + ")",
    options="STABLE SECURITY DEFINER",
    text=f"""
#variable_conflict use_column
DECLARE
    relation constant regclass := to_regclass(format('%I.%I', {SCHEMA_LITERAL}, '{SUMMARIES}'));
    traces constant regclass := to_regclass(format('%I.%I', {SCHEMA_LITERAL}, '{TRACES_TABLE}'));
    checked constant timestamptz := now();
    record_text text;
    newest_trace timestamptz;
    first_unseen timestamptz;
    newest_span timestamptz;
    installed timestamptz;
    state record;
    store text;
    holder jsonb;
BEGIN
    IF relation IS NULL THEN
        RETURN;
    END IF;
    record_text := obj_description(relation, 'pg_class');
    mode := {RECORDED_MODE_SQL.format(comment="record_text")};
    refresh_interval_seconds := {seconds_sql(RECORDED_INTERVAL_SQL.format(comment="record_text"))};
    stale_after_seconds := {STALE_INTERVALS} * refresh_interval_seconds;
    installed := CAST(substring(record_text FROM 'installed_at=([0-9TZ:-]+)') AS timestamptz);
    installed_age_seconds := extract(epoch FROM checked - installed);
    populated := CASE WHEN (SELECT relispopulated FROM pg_class WHERE oid = relation) THEN 1 ELSE 0 END;
    IF populated = 1 THEN
        newest_trace := (SELECT max("timestamp") FROM {qualified(SUMMARIES)});
    END IF;
    -- the first span the summaries do not show yet: written after their newest trace
    first_unseen := (SELECT min("timestamp") FROM {qualified(TRACES_TABLE)}
                     WHERE "timestamp" > coalesce(newest_trace, checked - interval '{WINDOW}')
                       AND "timestamp" <= checked AND trace_id <> '');
    newest_span := (SELECT max("timestamp") FROM {qualified(TRACES_TABLE)}
                    WHERE "timestamp" > checked - interval '{WINDOW}' AND "timestamp" <= checked
                      AND trace_id <> '');
    lag_seconds := greatest(coalesce(extract(epoch FROM checked - first_unseen), 0), 0);
    newest_trace_age_seconds := extract(epoch FROM checked - newest_trace);
    newest_span_age_seconds := extract(epoch FROM checked - newest_span);
    estimated_rows := (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = relation);
    holder := {incremental.LOCK_HOLDER};
    refresh_lock_stuck := CASE WHEN holder IS NOT NULL AND NOT CAST(holder->>'refreshing' AS boolean)
                               THEN 1 ELSE 0 END;
    stale := CASE WHEN populated = 0 OR lag_seconds > stale_after_seconds OR refresh_lock_stuck = 1
                  THEN 1 ELSE 0 END;
    IF to_regclass(format('%I.%I', {SCHEMA_LITERAL}, '{STATE_TABLE}')) IS NOT NULL THEN
        store := {qualified(incremental.CHILDREN.name)}(NULL, NULL)->>'store';
        SELECT * INTO state FROM {qualified(STATE_TABLE)};
        last_refresh_age_seconds := extract(epoch FROM checked - state.last_refresh_at);
        last_refresh_duration_seconds := state.last_refresh_seconds;
        last_refresh_full := CASE state.last_refresh_kind WHEN 'full' THEN 1 WHEN 'incremental' THEN 0 END;
        backlog_traces := (SELECT count(*) FROM (SELECT 1 FROM {qualified(DIRTY_TABLE)}
                                                  LIMIT {BACKLOG_COUNTED_UP_TO}) AS queued);
        capture_enabled := CASE WHEN {_capture_check()} THEN 1 ELSE 0 END;
        rebuild_pending := CASE WHEN state IS NULL OR state.window_boundary IS NULL
                                     OR state.rebuild_requested IS NOT NULL THEN 1 ELSE 0 END;
        rebuild_pending_seconds := CASE WHEN rebuild_pending = 1
            THEN extract(epoch FROM checked - coalesce(state.rebuild_requested_at, installed)) END;
        skipped_refreshes := state.skips_since_refresh;
        IF mode = 'incremental' AND (capture_enabled = 0
            OR coalesce(last_refresh_age_seconds > stale_after_seconds, installed_age_seconds > stale_after_seconds)
            OR rebuild_pending_seconds > stale_after_seconds) THEN
            stale := 1;
        END IF;
    END IF;
    RETURN NEXT;
END
""",
)

# Created with the summaries (both modes); only its owner and pg_monitor may run it.
CREATE = [
    in_schema(*METRICS.create, purpose=f"create the metrics function {METRICS_FUNCTION}()"),
    do_block(
        purpose=f"grant {MONITOR_ROLE} EXECUTE on {METRICS_FUNCTION}()",
        plpgsql=f"""        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MONITOR_ROLE}') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %I.{METRICS_FUNCTION}() TO {MONITOR_ROLE}', target);
        END IF;""",
    ),
]
QUERY = f"SELECT * FROM {qualified(METRICS_FUNCTION)}()"

# The query the exporter runs in the summaries' database (their schema: public, CNPG's).
EXPORTER_QUERY = f"SELECT current_database() AS datname, * FROM public.{METRICS_FUNCTION}()"

# The cron query's columns: (name, Prometheus usage, what it is).
CRON_COLUMNS = (
    ("job", "LABEL", "the pg_cron job's name: otel_trace_summaries:<database>.<schema>"),
    ("datname", "LABEL", "the database whose summaries it refreshes"),
    ("active", "GAUGE", "1 when the job is active"),
    ("interval_seconds", "GAUGE", "how often it runs, from its schedule"),
    ("last_run_age_seconds", "GAUGE", "time since its last run ended"),
    ("last_run_failed", "GAUGE", "1 when its last run failed"),
    ("last_success_age_seconds", "GAUGE", "time since its last successful run ended"),
    ("failing", "GAUGE",
     f"1 when inactive, failed last, or without success for {STALE_INTERVALS} intervals"),
)  # fmt: skip

# The interval of a pg_cron schedule as the job's schedule writes it, in seconds.
SCHEDULE_SECONDS = r"""(CASE
        WHEN {s} ~ '^[0-9]+ seconds?$' THEN CAST(split_part({s}, ' ', 1) AS int)
        WHEN {s} = '* * * * *' THEN 60
        WHEN {s} ~ '^\*/[0-9]+ \* \* \* \*$' THEN CAST(substring({s} FROM '^\*/([0-9]+)') AS int) * 60
        WHEN {s} = '0 * * * *' THEN 3600
        WHEN {s} ~ '^0 \*/[0-9]+ \* \* \*$' THEN CAST(substring({s} FROM '^0 \*/([0-9]+)') AS int) * 3600
    END)"""

JOB_PREFIX = f"{SUMMARIES}:"

# In pg_cron's database: one row per summaries job (its name says which database and
# schema; datname is the database it refreshes), failing by the same rule of stale.
# Cheap: pg_cron's tables, the newest runs first.
CRON_METRICS = f"""
SELECT j.jobname AS job, j.database AS datname,
       CAST(j.active AS int) AS active,
       CAST({SCHEDULE_SECONDS.format(s="j.schedule")} AS float8) AS interval_seconds,
       extract(epoch FROM now() - last.end_time) AS last_run_age_seconds,
       CASE last.status WHEN 'failed' THEN 1 ELSE 0 END AS last_run_failed,
       extract(epoch FROM now() - success.end_time) AS last_success_age_seconds,
       CASE WHEN NOT j.active OR last.status = 'failed'
                 OR coalesce(extract(epoch FROM now() - success.end_time)
                             > {STALE_INTERVALS} * {SCHEDULE_SECONDS.format(s="j.schedule")}, false)
            THEN 1 ELSE 0 END AS failing
FROM cron.job AS j
LEFT JOIN LATERAL (SELECT status, end_time FROM cron.job_run_details AS d
                   WHERE d.jobid = j.jobid AND d.status IN ('succeeded', 'failed')
                   ORDER BY d.runid DESC LIMIT 1) AS last ON true
LEFT JOIN LATERAL (SELECT end_time FROM cron.job_run_details AS d
                   WHERE d.jobid = j.jobid AND d.status = 'succeeded'
                   ORDER BY d.runid DESC LIMIT 1) AS success ON true
WHERE j.jobname LIKE '{JOB_PREFIX}%'
"""

# What the monitoring role needs in pg_cron's database to read the summaries' jobs:
# pg_cron's row security shows a role its own jobs only. Run there by a superuser
# (CNPG: the Cluster's postInitSQL, deploy/cnpg/cluster.yaml).
CRON_MONITOR_GRANTS = (
    f"GRANT USAGE ON SCHEMA cron TO {MONITOR_ROLE}",
    f"CREATE POLICY otel_trace_summaries_monitor ON cron.job FOR SELECT TO {MONITOR_ROLE} "
    f"USING (jobname LIKE '{JOB_PREFIX}%')",
    f"CREATE POLICY otel_trace_summaries_monitor ON cron.job_run_details FOR SELECT "
    f"TO {MONITOR_ROLE} USING (jobid IN (SELECT jobid FROM cron.job "
    f"WHERE jobname LIKE '{JOB_PREFIX}%'))",
)
