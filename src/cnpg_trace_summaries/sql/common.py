"""SQL both modes share: the summaries' storage settings and indexes, the record of
what is installed (the relation's comment), and the reader's grant.

The record is the summaries relation's comment, because a comment survives
``pg_dump --schema-only`` and a restore, where a row in a table would not::

    One row per trace over the last 7 days of otel_traces (created by
    cnpg-trace-summaries). mode=incremental; refresh_interval=10s;
    installed_at=2026-12-06T04:25:10Z

:func:`parse_record` reads it back; ``trace-summaries status`` judges the
job's first run against ``installed_at`` and staleness against the interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cnpg_trace_summaries.contract import CREATED_MARKER, SUMMARIES, SUMMARY_INDEXES, WINDOW
from cnpg_trace_summaries.interval import ALLOWED, Interval
from cnpg_trace_summaries.sql.render import do_block, qualified, value

# Autovacuum: every refresh deletes the rows of traces that left the window or
# changed and inserts their new versions. With the default 20 % scale factors a
# 1M-row relation would carry up to 200k dead rows (and their index entries) for
# hours between vacuums; at 1 % it is vacuumed about every half hour of churn,
# which keeps its size flat (bench/results, the cycles).
STORAGE = """(
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

# A switch builds the new relation beside the old one under this suffix.
NEXT_SUFFIX = "_next"
NEXT = f"{SUMMARIES}{NEXT_SUFFIX}"


def create_indexes(relation: str = SUMMARIES, suffix: str = "") -> list[str]:
    """The three indexes on ``relation`` (ours, in the schema), their names ending in ``suffix``."""
    return [
        "CREATE " + definition.format(name=name + suffix, relation=qualified(relation))
        for name, definition in INDEX_DEFINITIONS
    ]


def rename_indexes(suffix: str) -> list[str]:
    return [f"ALTER INDEX {qualified(name + suffix)} RENAME TO {name}" for name in SUMMARY_INDEXES]


# -- the record -------------------------------------------------------------------------
RECORD_PREFIX = f"One row per trace over the last {WINDOW} of otel_traces ({CREATED_MARKER}). "
_RECORD = re.compile(
    r"mode=(?P<mode>[a-z_]+); refresh_interval=(?P<interval>[0-9a-z]+); "
    r"installed_at=(?P<installed_at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"
)


@dataclass(frozen=True)
class Record:
    """What the summaries' comment says was installed."""

    mode: str
    refresh_interval: str
    installed_at: datetime


def parse_record(comment: str | None) -> Record | None:
    found = _RECORD.search(comment or "")
    if found is None:
        return None
    at = datetime.fromisoformat(found["installed_at"].replace("Z", "+00:00"))
    return Record(found["mode"], found["interval"], at)


# The SQL expression of the record's mode (NULL where there is no record), over a
# relation's comment.
RECORDED_MODE_SQL = r"substring({comment} from 'mode=([a-z_]+);')"
RECORDED_INTERVAL_SQL = r"substring({comment} from 'refresh_interval=([0-9a-z]+);')"


# The cron schedule of an interval as the record writes it (10s, 2min, 1h): every
# allowed interval, from Interval.cron.
SCHEDULE = (
    "(CASE {i}"
    + "".join(
        f"\n        WHEN '{every.text}' THEN '{every.cron}'" for every in map(Interval, ALLOWED)
    )
    + "\n    END)"
)

# An interval as the record writes it, in seconds.
INTERVAL_SECONDS = """(CASE
        WHEN {i} ~ '^[0-9]+s$' THEN CAST(rtrim({i}, 's') AS int)
        WHEN {i} ~ '^[0-9]+min$' THEN CAST(left({i}, -3) AS int) * 60
        WHEN {i} ~ '^[0-9]+h$' THEN CAST(rtrim({i}, 'h') AS int) * 3600
    END)"""


def schedule_sql(interval_sql: str) -> str:
    return SCHEDULE.format(i=interval_sql)


def seconds_sql(interval_sql: str) -> str:
    return INTERVAL_SECONDS.format(i=interval_sql)


def record(kind: str, mode: str, relation: str = SUMMARIES) -> str:
    """Write the record on ``relation`` (a ``kind``: TABLE, MATERIALIZED VIEW): ``mode``,
    the value ``refresh_interval``, and the time now."""
    return do_block(
        purpose=f"record the install on {relation}",
        plpgsql=f"""        EXECUTE format('COMMENT ON {kind} %I.%I IS %L', target, '{relation}',
            '{RECORD_PREFIX}mode={mode}; refresh_interval=' || {value("refresh_interval")}
            || '; installed_at=' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));""",
    )


# The reader role (value reader_role; none when empty) may read the summaries.
GRANT_READER = do_block(
    purpose="grant the reader role SELECT on otel_trace_summaries",
    plpgsql=f"""        IF coalesce({value("reader_role")}, '') <> '' THEN
            EXECUTE format('GRANT SELECT ON %I.{SUMMARIES} TO %I', target, {value("reader_role")});
        END IF;""",
)
