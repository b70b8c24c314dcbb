"""otel_traces as a TimescaleDB hypertable, for ``python -m bench --hypertable``.

Revision 1 makes otel_traces a hypertable in chunks of a day wherever the
``timescaledb`` extension is in the database (:func:`prepare` creates it, as the
superuser, before migrating). Compression is then switched on, segmented by
service_name and ordered by "timestamp" DESC, as a trace pipeline's would be, and
after every stage's load the chunks older than a day are compressed
(:func:`compress_old_chunks`), so that every measurement runs on a store whose
window is compressed but for its last day.

The cycles make spans leave the window by deleting them (time does not pass between
them). A DELETE on a compressed chunk decompresses every batch it may touch, and
TimescaleDB can rule a batch out only by constants on its segmentby and orderby
columns: so on a hypertable those DELETEs carry the time range of what they delete
as literals (:func:`bounded`), and the benchmark's session lifts TimescaleDB's cap on
the rows one transaction may decompress (a cycle deletes 120,000 spans, above it).
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import psycopg
from psycopg import sql

from cnpg_trace_summaries.contract import TRACES_TABLE

STORE = "hypertable"
COMPRESS_AFTER = "1 day"

COMPRESSION_SQL = (
    f"ALTER TABLE {TRACES_TABLE} SET (timescaledb.compress, "
    "timescaledb.compress_segmentby = 'service_name', "
    "timescaledb.compress_orderby = '\"timestamp\" DESC')"
)
COMPRESS_SQL = (
    "SELECT count(compress_chunk(c, if_not_compressed => true)) "
    f"FROM show_chunks('{TRACES_TABLE}', older_than => CAST(%s AS interval)) AS c"
)
# Partially compressed: rows written into a compressed chunk, or decompressed by a DELETE,
# wait uncompressed beside its compressed batches (TimescaleDB's CHUNK_STATUS_COMPRESSED_PARTIAL).
PARTIAL = 8
CHUNKS_SQL = f"""
SELECT count(*), count(*) FILTER (WHERE i.is_compressed),
       count(*) FILTER (WHERE c.status & {PARTIAL} <> 0),
       count(*) FILTER (WHERE i.range_end <= now() - interval '7 days'),
       min(i.range_end - i.range_start)
FROM timescaledb_information.chunks AS i
JOIN _timescaledb_catalog.chunk AS c
  ON c.schema_name = i.chunk_schema AND c.table_name = i.chunk_name
WHERE i.hypertable_schema = 'public' AND i.hypertable_name = '{TRACES_TABLE}'
"""
SIZES_SQL = f"""
SELECT (SELECT hypertable_size('{TRACES_TABLE}')),
       before_compression_total_bytes, after_compression_total_bytes
FROM hypertable_compression_stats('{TRACES_TABLE}')
"""
# How many rows one transaction's DML may decompress (100,000 by default; 0: no cap).
DECOMPRESSION_CAP = "timescaledb.max_tuples_decompressed_per_dml_transaction"
# The time range of the spans of some summarised traces (the summaries know it).
TRACES_TIME_RANGE_SQL = """
SELECT to_timestamp(min(start_time_unix_nano) / 1e9) - interval '1 second',
       max("timestamp") + interval '1 second'
FROM otel_trace_summaries WHERE trace_id IN ({traces})
"""
# What EXPLAIN ANALYZE says of chunks left out once now() is known, at the executor's start.
EXCLUDED = re.compile(r"Chunks excluded during startup: (\d+)")


def prepare(conn: psycopg.Connection) -> str:
    """The timescaledb extension in the database (before revision 1); its version."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()[0]


def enable_compression(conn: psycopg.Connection) -> None:
    """After revision 1: check that it made a hypertable, then switch compression on (and
    lift, for ``conn``'s session, the cap on the rows a DELETE may decompress)."""
    is_hypertable = conn.execute(
        "SELECT count(*) FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = 'public' AND hypertable_name = %s",
        (TRACES_TABLE,),
    ).fetchone()[0]
    if not is_hypertable:
        raise RuntimeError(f"revision 1 did not make {TRACES_TABLE} a hypertable")
    conn.execute(COMPRESSION_SQL)
    conn.execute(f"SET {DECOMPRESSION_CAP} = 0")


def chunks(conn: psycopg.Connection) -> dict:
    """How many chunks, compressed, wholly before the window; the store's sizes."""
    total, compressed, partial, before_window, width = conn.execute(CHUNKS_SQL).fetchone()
    sizes = conn.execute(SIZES_SQL).fetchone() or (None, None, None)
    return {
        "chunks": total,
        "compressed": compressed,
        "partially_compressed": partial,
        "before_window": before_window,
        "chunk_interval": str(width),
        "hypertable_bytes": sizes[0],
        "compressed_chunks_bytes_before": sizes[1],
        "compressed_chunks_bytes_after": sizes[2],
    }


def compress_old_chunks(conn: psycopg.Connection, older_than: str = COMPRESS_AFTER) -> dict:
    """Compress every chunk older than ``older_than`` not compressed yet: how many, how long."""
    started = time.perf_counter()
    count = conn.execute(COMPRESS_SQL, (older_than,)).fetchone()[0]
    return {"compressed_now": count, "seconds": time.perf_counter() - started, **chunks(conn)}


def excluded_at_startup(plan: str) -> list[int]:
    """Every "Chunks excluded during startup: N" of an EXPLAIN ANALYZE, in order."""
    return [int(n) for n in EXCLUDED.findall(plan)]


def bounded(statement: str, low: datetime, high: datetime) -> sql.Composed:
    """``statement``, whose WHERE clause comes last, restricted to spans from ``low`` to
    ``high``, written as literals so that TimescaleDB decompresses only the batches there."""
    return sql.SQL(statement.rstrip()) + sql.SQL(' AND "timestamp" BETWEEN {} AND {}').format(
        sql.Literal(low), sql.Literal(high)
    )


def time_range(conn: psycopg.Connection, traces: str, params: dict) -> tuple:
    """From the first span to the last of the summarised traces ``traces`` (a subquery of
    trace_ids, with its ``params``), with a second to spare; (None, None) if none is there."""
    return conn.execute(TRACES_TIME_RANGE_SQL.format(traces=traces), params).fetchone()
