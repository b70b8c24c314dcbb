"""The semantics of one summary row, as SQL, written once.

The materialized view's definition, the incremental mode's per-trace
recomputation, its full rebuild and ``trace-summaries verify`` are all built
from :data:`AGGREGATES` (one pass over a trace's spans) and
:data:`PROJECTION` (the 14 columns from those aggregates). The semantics table of
docs/ARCHITECTURE.md describes them, and tests/reference.py is their pure-Python
twin that the tests compare them with.

One pass over the window, one ``GROUP BY trace_id``: that is what a refresh
spends its time on (bench/results). The root span is picked with ``min()``
over an array per root span, compared element by element in "C" (byte) order:

1. start_time_unix_nano as 16 hex digits, order-preserving for every bigint
   (sign bit flipped), or ``'z'`` when unknown, so that unknown starts lose;
2. span_id; then the root's other columns, which only break ties between
   copies of one root span (same start and span_id).

Every root column is then read from that one array, so they all come from the
same span. ``COLLATE "C"`` also sorts ``service_set`` in byte order.

The window ends at :data:`BOUNDARY`: seven days before now, computed in UTC,
so that every refresher (whatever its session's TimeZone) and every day of
the year (DST changes) give the same boundary.

A full rebuild aggregates the window in slices of time (:data:`AGGREGATES`
per slice, into a staging table) and then combines a trace's slices
(:data:`COMBINED`): every aggregate here can be combined that way.
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import (
    STATUS_ERROR,
    SUMMARY_COLUMNS,
    TRACES_TABLE,
    WINDOW,
)
from cnpg_trace_summaries.sql.render import qualified

TRACES = qualified(TRACES_TABLE)

BOUNDARY = f"(now() AT TIME ZONE 'UTC' - interval '{WINDOW}') AT TIME ZONE 'UTC'"

# The aggregates of one trace's spans, and their names, in order.
AGGREGATE_COLUMNS = (
    "last_span_at",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "service_set",
    "span_count",
    "error_count",
    "root",
)

AGGREGATES = f"""max("timestamp") AS last_span_at,
        min(start_time_unix_nano) AS start_time_unix_nano,
        max(end_time_unix_nano) AS end_time_unix_nano,
        coalesce(
            array_agg(DISTINCT service_name COLLATE "C") FILTER (WHERE service_name IS NOT NULL),
            CAST('{{}}' AS text[])) AS service_set,
        count(*) AS span_count,
        count(*) FILTER (WHERE status_code = {STATUS_ERROR}) AS error_count,
        min(ARRAY[
                CASE WHEN start_time_unix_nano IS NULL THEN 'z'
                     ELSE lpad(to_hex(start_time_unix_nano # CAST(x'8000000000000000' AS bigint)), 16, '0')
                END,
                span_id, name, service_name, CAST(kind AS text), CAST(status_code AS text), status_message
            ] COLLATE "C") FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '') AS root"""


def combined(partials: str, alias: str = "p") -> str:
    """:data:`AGGREGATES` of a trace from its per-slice aggregates (rows of ``partials``)."""
    return f"""max({alias}.last_span_at) AS last_span_at,
        min({alias}.start_time_unix_nano) AS start_time_unix_nano,
        max({alias}.end_time_unix_nano) AS end_time_unix_nano,
        CASE WHEN count(*) = 1 THEN min({alias}.service_set)
             ELSE ARRAY(SELECT DISTINCT (s COLLATE "C") AS s
                        FROM {partials} AS q CROSS JOIN LATERAL unnest(q.service_set) AS s
                        WHERE q.trace_id = {alias}.trace_id ORDER BY s)
        END AS service_set,
        CAST(sum({alias}.span_count) AS bigint) AS span_count,
        CAST(sum({alias}.error_count) AS bigint) AS error_count,
        min({alias}.root) AS root"""


PROJECTION = """trace_id,
    last_span_at AS "timestamp",
    root[2] AS root_span_id,
    root[3] AS root_span_name,
    root[4] AS root_service_name,
    CAST(root[5] AS integer) AS root_span_kind,
    start_time_unix_nano,
    end_time_unix_nano,
    CASE
        WHEN start_time_unix_nano IS NULL OR end_time_unix_nano IS NULL THEN NULL
        -- times 0.000001, not divided by 1000000: the product is exact (6 decimals),
        -- so the cast rounds once, as (end - start) / 1e6 in Python does; a numeric
        -- division rounds to 16 digits first, and then the double can differ.
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            * 0.000001 AS double precision)
    END AS duration_ms,
    CAST(root[6] AS integer) AS status_code,
    root[7] AS status_message,
    service_set,
    span_count,
    error_count"""


def window_query(boundary: str = BOUNDARY, extra_condition: str = "TRUE") -> str:
    """Every trace's summary over the spans after ``boundary`` (a SQL expression).

    With the default boundary this is the materialized view's definition.
    """
    return f"""SELECT
    {PROJECTION}
FROM (
    SELECT
        trace_id,
        {AGGREGATES}
    FROM {TRACES}
    WHERE "timestamp" > {boundary} AND trace_id <> '' AND {extra_condition}
    GROUP BY trace_id
) AS per_trace"""


def slice_query(low: str, high: str) -> str:
    """The per-trace aggregates of the spans in ``(low, high]`` (SQL expressions; NULL: open)."""
    return f"""SELECT
        trace_id,
        {AGGREGATES}
    FROM {TRACES}
    WHERE "timestamp" > {low} AND ({high} IS NULL OR "timestamp" <= {high}) AND trace_id <> ''
    GROUP BY trace_id"""


def combined_query(partials: str, condition: str) -> str:
    """The summaries of the traces of ``partials`` (rows of :func:`slice_query`) that meet
    ``condition`` (over ``p``), one row per trace."""
    return f"""SELECT
    {PROJECTION}
FROM (
    SELECT
        p.trace_id,
        {combined(partials)}
    FROM {partials} AS p
    WHERE {condition}
    GROUP BY p.trace_id
) AS per_trace"""


def keyed_query(keys: str, boundary: str) -> str:
    """The summaries of the traces in ``keys`` (a relation with a trace_id column).

    One index lookup per trace. A trace with no span after ``boundary`` gives
    no row: its summary is to be deleted.
    """
    return f"""SELECT
    {PROJECTION}
FROM (
    SELECT one_trace.*
    FROM {keys} AS k
    CROSS JOIN LATERAL (
        SELECT
            k.trace_id AS trace_id,
            {AGGREGATES}
        FROM {TRACES} AS t
        WHERE t.trace_id = k.trace_id AND t."timestamp" > {boundary}
    ) AS one_trace
) AS per_trace
WHERE span_count > 0"""


COLUMN_LIST = ", ".join(f'"{column}"' for column in SUMMARY_COLUMNS)
