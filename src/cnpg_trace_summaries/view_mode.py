"""The view mode (the default, the spec's): a materialized view, refreshed concurrently.

SQL only; revision 00000000000007 and ``trace-summaries switch`` run it.
Names are parameters where the switch builds a new relation beside the old
one and renames it at the swap.
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import (
    CREATED_MARKER,
    REFRESH_EVERY,
    SUMMARIES,
    SUMMARY_INDEXES,
    WINDOW,
)
from cnpg_trace_summaries.summary_sql import window_query

# Autovacuum: every concurrent refresh deletes the rows of traces that left
# the window or changed and inserts their new versions. With the default 20 %
# scale factors a 1M-row view would carry up to 200k dead rows (and their index
# entries) for hours between vacuums; at 1 % it is vacuumed about every half
# hour of churn, which keeps its size flat (bench/results, the cycles).
SUMMARIES_STORAGE = """(
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000
)"""

# (name, definition): the listing queries' indexes; the first is what
# REFRESH ... CONCURRENTLY and the incremental upsert need (unique, plain column).
INDEX_DEFINITIONS = tuple(
    zip(
        SUMMARY_INDEXES,
        ("UNIQUE INDEX {name} ON {relation} (trace_id)",
         'INDEX {name} ON {relation} ("timestamp" DESC)',
         'INDEX {name} ON {relation} (root_service_name, "timestamp" DESC)'),
        strict=True,
    )
)  # fmt: skip

NEXT_SUFFIX = "_next"


def create_indexes(relation: str = SUMMARIES, suffix: str = "") -> list[str]:
    """The three indexes on ``relation``, their names ending in ``suffix``."""
    return [
        "CREATE " + definition.format(name=name + suffix, relation=relation)
        for name, definition in INDEX_DEFINITIONS
    ]


def rename_indexes(suffix: str) -> list[str]:
    return [f"ALTER INDEX {name}{suffix} RENAME TO {name}" for name in SUMMARY_INDEXES]


def comment(kind: str, mode: str, relation: str = SUMMARIES) -> str:
    """A comment that marks the relation as ours and records when it was installed.

    ``trace-summaries status`` reads the time back: a job that has not
    succeeded within two intervals of it is a problem.
    """
    return f"""
DO $comment$
BEGIN
    EXECUTE format('COMMENT ON {kind} %I.%I IS %L', current_schema(), '{relation}',
        'One row per trace over the last {WINDOW} of otel_traces ({CREATED_MARKER}, '
        'revision 00000000000007, {mode} mode, installed at '
        || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '). '
        || 'Refreshed by pg_cron {REFRESH_EVERY} where available; else run: trace-summaries refresh');
END
$comment$
"""


def create_view(relation: str = SUMMARIES) -> str:
    return (
        f"CREATE MATERIALIZED VIEW {relation}\nWITH {SUMMARIES_STORAGE} AS\n"
        f"{window_query()}\nWITH DATA"
    )


def install(relation: str = SUMMARIES, suffix: str = "") -> list[str]:
    """Create, populate, index and analyze the view, in one transaction."""
    return [
        create_view(relation),
        comment("MATERIALIZED VIEW", "view", relation),
        *create_indexes(relation, suffix),
        f"ANALYZE {relation}",
    ]
