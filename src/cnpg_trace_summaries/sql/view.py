"""The view mode (the default, the spec's): a materialized view, refreshed concurrently.

Names are parameters where the switch builds a new relation beside the old
one and renames it at the swap.
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import SUMMARIES
from cnpg_trace_summaries.sql.common import STORAGE, create_indexes, record, seconds_sql
from cnpg_trace_summaries.sql.render import do_block, executes, qualified, value
from cnpg_trace_summaries.sql.summary import window_query

KIND = "MATERIALIZED VIEW"

# The job's command, as a SQL expression over the schema (what pg_cron runs, and
# what the spec names): qualified, because pg_cron runs each job in a fresh session.
JOB_COMMAND = f"format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.{SUMMARIES}', {{schema}})"


# The view rescans the window at every refresh: it is refreshed every minute at
# most, and never more often than it takes to build (a concurrent refresh takes
# about twice as long as the build, bench/results).
def create(relation: str = SUMMARIES, suffix: str = "") -> list[str]:
    """Create, populate, index and analyze the view, then record it: one transaction.

    Refused, with the time the build took, where the value refresh_interval is
    shorter than a minute or than the build."""
    build = [
        f"CREATE MATERIALIZED VIEW {qualified(relation)}\nWITH {STORAGE} AS\n"
        f"{window_query()}\nWITH DATA"
    ]
    rest = [*create_indexes(relation, suffix), f"ANALYZE {qualified(relation)}"]
    return [
        do_block(
            purpose=f"build the materialized view {relation} and its indexes",
            plpgsql=f"""        IF {value("refresh_interval")} ~ 's$' THEN
            RAISE EXCEPTION 'the view mode refreshes at most every minute (refresh_interval=% asks for more): it rescans the whole window each time',
                    {value("refresh_interval")}
                USING HINT = 'Use -x summaries=incremental for intervals in seconds, or a refresh_interval of 1min or more.';
        END IF;
        started := clock_timestamp();
{executes(build)}
        took := extract(epoch FROM clock_timestamp() - started);
        IF took > {seconds_sql(value("refresh_interval"))} THEN
            RAISE EXCEPTION 'building otel_trace_summaries took % s, longer than refresh_interval=%: the view could never be fresh',
                    round(CAST(took AS numeric), 1), {value("refresh_interval")}
                USING HINT = 'A concurrent refresh takes longer than the build. Choose a longer refresh_interval, or -x summaries=incremental.';
        END IF;
{executes(rest)}""",
            declare="\n        started pg_catalog.timestamptz;\n        took pg_catalog.float8;",
        ),
        record(KIND, "view", relation),
    ]
