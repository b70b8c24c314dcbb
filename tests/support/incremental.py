"""The incremental mode under test: install it, refresh it, and compare it with its definition.

:func:`compare` is the proof the tests apply after every step: in one
REPEATABLE READ snapshot it reads the table's window boundary from the state
row, the table itself, the spans, and the counts of
``window_query(boundary) EXCEPT ALL table`` both ways, which must be 0 and 0.
The rows can then also be compared with tests/reference.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from cnpg_trace_summaries.contract import (
    DIRTY_TABLE,
    REFRESH_FUNCTION,
    STATE_TABLE,
    SUMMARIES,
    SUMMARY_COLUMNS,
    TRACES_TABLE,
    span_columns_ddl,
)
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql.render import for_schema
from cnpg_trace_summaries.sql.summary import COLUMN_LIST, window_query
from tests.reference import WINDOW, Span
from tests.support.spans import SPAN_FIELDS

INCREMENTAL = {"summaries": "incremental"}


def install(database, **x: str) -> str:
    """``alembic upgrade head`` in incremental mode; returns the NOTICEs."""
    return database.migrate("upgrade", "head", x={**INCREMENTAL, **x})


def refresh(conn: psycopg.Connection, *, full: bool = False) -> dict:
    """``CALL otel_trace_summaries_refresh()`` on an autocommit connection; its outcome."""
    return conn.execute(f"CALL {REFRESH_FUNCTION}(full_rebuild => %s)", (full,)).fetchone()[0]


@dataclass(frozen=True)
class Comparison:
    boundary: datetime
    rebuild_requested: str | None
    pending: int  # dirty keys not yet claimed
    missing: int  # rows of the definition that the table lacks
    unexpected: int  # rows of the table that the definition does not give
    rows: dict[str, dict]
    spans: list[Span]

    @property
    def now(self) -> datetime:
        """The reference's ``now``: the refresh's window boundary plus the window."""
        return self.boundary + WINDOW

    @property
    def exact(self) -> bool:
        return (self.missing, self.unexpected, self.pending, self.rebuild_requested) == (
            0,
            0,
            0,
            None,
        )

    def describe(self) -> str:
        return (
            f"{self.missing} missing, {self.unexpected} unexpected, {self.pending} pending keys, "
            f"rebuild requested: {self.rebuild_requested}"
        )


def compare(conn: psycopg.Connection, *, with_rows: bool = True) -> Comparison:
    """The table against its definition at its own window boundary, at one snapshot.

    ``conn`` is in autocommit. Nothing is left out: after a refresh with no
    writer running, the table must equal the definition as a whole.
    """
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        boundary, rebuild = conn.execute(
            f"SELECT window_boundary, rebuild_requested FROM {STATE_TABLE}"
        ).fetchone()
        pending = dirty_keys(conn)
        missing, unexpected = differences(conn, boundary)
        rows = table_rows(conn) if with_rows else {}
        spans = stored_spans(conn) if with_rows else []
    finally:
        conn.execute("ROLLBACK")
    return Comparison(boundary, rebuild, pending, missing, unexpected, rows, spans)


def differences(conn: psycopg.Connection, boundary: datetime | None = None) -> tuple[int, int]:
    """(missing, unexpected): ``window_query(boundary) EXCEPT ALL`` the summaries, both ways.

    Without ``boundary``, the definition is the materialized view's own.
    """
    definition, params = (
        (window_query(), None)
        if boundary is None
        else (window_query("%(boundary)s"), {"boundary": boundary})
    )
    definition = for_schema(definition, here(conn).schema, parameters=params is not None)
    return conn.execute(
        f"""
        WITH definition AS ({definition}),
             actual AS (SELECT {COLUMN_LIST} FROM {SUMMARIES})
        SELECT (SELECT count(*) FROM (SELECT * FROM definition
                                      EXCEPT ALL SELECT * FROM actual) AS d),
               (SELECT count(*) FROM (SELECT * FROM actual
                                      EXCEPT ALL SELECT * FROM definition) AS u)
        """,
        params,
    ).fetchone()


def here(conn: psycopg.Connection) -> Place:
    """``conn`` as the package's live functions take it: with the schema first on its path."""
    return Place(conn, conn.execute("SELECT current_schema()").fetchone()[0])


def assert_exact(conn: psycopg.Connection) -> None:
    result = compare(conn, with_rows=False)
    assert result.exact, result.describe()


def table_rows(conn: psycopg.Connection) -> dict[str, dict]:
    cur = conn.execute(f"SELECT {COLUMN_LIST} FROM {SUMMARIES}")
    return {row[0]: dict(zip(SUMMARY_COLUMNS, row, strict=True)) for row in cur.fetchall()}


def stored_spans(conn: psycopg.Connection) -> list[Span]:
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in SPAN_FIELDS)
    cur = conn.execute(sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(TRACES_TABLE)))
    return [Span(*row) for row in cur.fetchall()]


def copy_spans(conn: psycopg.Connection, spans: list[Span]) -> None:
    """One COPY statement (its statement-level triggers fire once, with every row)."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in SPAN_FIELDS)
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(TRACES_TABLE), columns)
        ) as copy,
    ):
        for span in spans:
            copy.write_row([getattr(span, name) for name in SPAN_FIELDS])


def traces_sql(prefix: str, traces: int, *, age: str = "1 hour", spans: int = 3) -> str:
    """SQL inserting ``traces`` traces of ``spans`` spans (one root) about ``age`` old."""
    return f"""
INSERT INTO {TRACES_TABLE} ("timestamp", trace_id, span_id, parent_span_id, name, kind,
                            start_time_unix_nano, end_time_unix_nano, service_name, status_code)
SELECT now() - interval '{age}' + s * interval '1 millisecond',
       '{prefix}' || lpad(CAST(t AS text), 6, '0'),
       'span' || s,
       CASE WHEN s = 0 THEN NULL ELSE 'span0' END,
       CASE WHEN s = 0 THEN 'GET /' || (t % 7) ELSE 'call-' || s END,
       CASE WHEN s = 0 THEN 2 ELSE 3 END,
       1700000000000000000 + t * 1000 + s,
       1700000000000000000 + t * 1000 + 100 - s,
       (ARRAY['api', 'cart', 'db'])[1 + (t + s) % 3],
       CASE WHEN t % 10 = 0 AND s = 1 THEN 2 ELSE 0 END
FROM generate_series(1, {traces}) AS t CROSS JOIN generate_series(0, {spans - 1}) AS s
"""


def configure(conn: psycopg.Connection, **settings: object) -> None:
    """Set columns of the state row (the refresh's knobs)."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in settings.items()
    )
    conn.execute(sql.SQL("UPDATE {} SET ").format(sql.Identifier(STATE_TABLE)) + assignments)


def dirty_keys(conn: psycopg.Connection) -> int:
    return conn.execute(f"SELECT count(*) FROM {DIRTY_TABLE}").fetchone()[0]


# A collector's own otel_traces, partitioned by day: the columns of the first
# revision, a primary key that includes the partition key, its own index on
# trace_id (the first revision cannot build one concurrently on a partitioned
# table), and daily partitions otel_traces_YYYYMMDD from 9 days ago to tomorrow.
PARTITIONED_TRACES = f"""
CREATE TABLE otel_traces (
    {span_columns_ddl()},
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY ("timestamp", trace_id, span_id)
) PARTITION BY RANGE ("timestamp");
CREATE INDEX otel_traces_by_trace ON otel_traces (trace_id);
DO $partitions$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT CAST(d AS date)
               FROM generate_series(current_date - 9, current_date + 1, interval '1 day') AS d LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF otel_traces FOR VALUES FROM (%L) TO (%L)',
                       'otel_traces_' || to_char(day, 'YYYYMMDD'), day, day + 1);
    END LOOP;
END
$partitions$;
"""


def partition_of(conn: psycopg.Connection, moment: str) -> str:
    """The partition that holds ``moment`` (a SQL expression)."""
    return conn.execute(f"SELECT 'otel_traces_' || to_char({moment}, 'YYYYMMDD')").fetchone()[0]


class Reader:
    """A dashboard reading the summaries in a loop, each query under ``lock_timeout``.

    Records every query's latency and every failure: a reader blocked for
    longer than ``lock_timeout`` fails.
    """

    QUERY = f"SELECT * FROM {SUMMARIES} LIMIT 10"

    def __init__(self, url: str, lock_timeout: str = "1s"):
        self.url = url
        self.lock_timeout = lock_timeout
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._read)

    def __enter__(self) -> Reader:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.latencies and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _read(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"SET lock_timeout = '{self.lock_timeout}'")
            while not self.stop.is_set():
                started = time.perf_counter()
                try:  # prepared, as drivers and poolers do: it must survive a switch
                    conn.execute(self.QUERY, prepare=True).fetchall()
                except psycopg.Error as error:
                    self.errors.append(str(error))
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.002)

    def describe(self) -> str:
        return (
            f"{len(self.latencies):,} reads, {len(self.errors)} failed, "
            f"slowest {max(self.latencies) * 1000:.1f} ms"
        )
