"""What the incremental mode's capture trigger costs ingest: triggers enabled against disabled.

Three ways a collector writes spans, each statement its own transaction:

* ``insert``: 1,000-row ``INSERT ... VALUES`` statements;
* ``copy``: ``COPY otel_traces FROM STDIN`` of 1,000 rows;
* ``single``: single-row ``INSERT`` statements.

The rows (new traces of 10 spans, timestamped now, so inside the window and
captured) and the statements' text are prepared before the clock starts: the
timed part is each statement's round trip, which is what the server spends on
it plus the network. In every round and for every way, one block with the
insert trigger enabled and one with it disabled run back to back (``ALTER
TABLE otel_traces ENABLE/DISABLE TRIGGER`` between them, outside the clock),
in alternating order, so that the two blocks of a pair see the same load on the
machine. The overhead is the median over the rounds of the pair's ratio; the
medians of each arm, and the ratio of those, are reported too.

Rows written with the trigger disabled have no dirty key, so the summaries miss
them: :func:`measure` deletes every row it wrote (with the trigger enabled), then
the caller refreshes and verifies.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from bench.workload import (
    INGEST_SINGLE_ROWS,
    INGEST_STATEMENTS,
    ROWS_PER_STATEMENT,
    SPAN_COLUMN_LIST,
    SPANS_PER_TRACE,
    span_tail,
)
from cnpg_trace_summaries.contract import CAPTURE_TRIGGERS, TRACES_TABLE

KINDS = ("insert", "copy", "single")
ARMS = ("enabled", "disabled")


def span_rows(tag: str, traces: int, now: datetime) -> list[tuple]:
    """Rows of ``traces`` new traces of SPANS_PER_TRACE spans, as a collector would send them."""
    rows = []
    for i in range(traces):
        trace_id = hashlib.md5(f"{tag}.{i}".encode()).hexdigest()
        started = now - timedelta(seconds=10) + timedelta(milliseconds=i)
        start_ns = int(started.timestamp() * 1e9)
        for s in range(SPANS_PER_TRACE):
            span_id = hashlib.md5(f"{trace_id}.{s}".encode()).hexdigest()[:16]
            parent = None if s == 0 else hashlib.md5(f"{trace_id}.{(s - 1) // 2}".encode())
            rows.append((
                (started + timedelta(milliseconds=3 * s)).isoformat(),
                trace_id,
                span_id,
                parent.hexdigest()[:16] if parent else None,
                f"GET /api/v1/{i % 17}" if s == 0 else f"rpc.call-{s % 5}",
                2 if s == 0 or s % 2 == 0 else 3,
                start_ns + s * 3_000_000,
                start_ns + s * 3_000_000 + (20 - s) * 1_500_000,
                *span_tail(i, s, SPANS_PER_TRACE - 1),
            ))  # fmt: skip
    return rows


def insert_statement(rows: list[tuple]) -> str:
    values = ",\n".join(
        "(" + ", ".join(sql.Literal(v).as_string(None) for v in row) + ")" for row in rows
    )
    return f"INSERT INTO {TRACES_TABLE} ({SPAN_COLUMN_LIST}) VALUES\n{values}"


def copy_data(rows: list[tuple]) -> bytes:
    lines = ("\t".join(r"\N" if v is None else str(v) for v in row) for row in rows)
    return ("\n".join(lines) + "\n").encode()


def _timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


class Block:
    """One timed block: ``statements`` statements of one kind, prepared before the clock starts."""

    def __init__(self, kind: str, tag: str, statements: int, single_rows: int):
        now = datetime.now(UTC)
        self.kind = kind
        if kind == "single":
            rows = span_rows(tag, math.ceil(single_rows / SPANS_PER_TRACE), now)[:single_rows]
            self.payload: list = [insert_statement([row]) for row in rows]
            self.spans = len(rows)
            self.trace_ids = sorted({r[1] for r in rows})
            return
        self.payload, self.trace_ids = [], []
        for k in range(statements):
            rows = span_rows(f"{tag}.{k}", ROWS_PER_STATEMENT // SPANS_PER_TRACE, now)
            self.trace_ids += sorted({r[1] for r in rows})
            self.payload.append(insert_statement(rows) if kind == "insert" else copy_data(rows))
        self.spans = ROWS_PER_STATEMENT * statements

    def run(self, conn: psycopg.Connection) -> float:
        """Seconds per span."""

        def statements() -> None:
            for statement in self.payload:
                conn.execute(statement)

        def copies() -> None:
            with conn.cursor() as cur:
                for data in self.payload:
                    with cur.copy(f"COPY {TRACES_TABLE} ({SPAN_COLUMN_LIST}) FROM STDIN") as copy:
                        copy.write(data)

        return _timed(copies if self.kind == "copy" else statements) / self.spans


def _overhead(per_round: list[dict], kind: str) -> dict:
    """The medians of both arms of ``kind``, and the median and quartiles of the pairs' ratios."""
    medians = {
        arm: statistics.median(r[arm][kind]["us_per_span"] for r in per_round) for arm in ARMS
    }
    ratios = [
        r["enabled"][kind]["us_per_span"] / r["disabled"][kind]["us_per_span"] for r in per_round
    ]
    paired = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [paired] * 3
    return {
        "pairs_overhead_pct_p25": (quartiles[0] - 1) * 100,
        "pairs_overhead_pct_p75": (quartiles[2] - 1) * 100,
        "enabled_us_per_span": medians["enabled"],
        "disabled_us_per_span": medians["disabled"],
        "overhead_pct": (paired - 1) * 100,
        "ratio_of_medians_overhead_pct": (medians["enabled"] / medians["disabled"] - 1) * 100,
    }


def _set_trigger(conn: psycopg.Connection, enabled: bool) -> None:
    action = "ENABLE" if enabled else "DISABLE"
    conn.execute(f"ALTER TABLE {TRACES_TABLE} {action} TRIGGER {CAPTURE_TRIGGERS['INSERT']}")


def _delete_since(since: datetime) -> sql.Composed:
    """DELETE of the spans of some trace_ids (the parameter) written after ``since``, a literal."""
    return sql.SQL(
        f'DELETE FROM {TRACES_TABLE} WHERE trace_id = ANY(%s) AND "timestamp" >= {{}}'
    ).format(sql.Literal(since))


def _alternated_rounds(
    rounds: int,
    kinds: tuple[str, ...],
    timed: Callable[[str, str, int], float],
    log: Callable[[str], None] | None,
    what: str,
) -> list[dict]:
    """``rounds`` counted rounds after a warm-up round 0: in each, for every kind, one block per
    arm back to back (``timed(kind, arm, round)``: µs per span), in alternating order."""
    per_round: list[dict] = []
    for number in range(rounds + 1):
        result: dict = {"round": number, "order": {}}
        for index, kind in enumerate(kinds):
            order = ARMS if (number + index) % 2 == 0 else tuple(reversed(ARMS))
            result["order"][kind] = list(order)
            for arm in order:
                result.setdefault(arm, {})[kind] = {"us_per_span": timed(kind, arm, number)}
        if number == 0:
            continue
        per_round.append(result)
        if log and (number % 5 == 0 or number == rounds):
            log(
                f"{what} round {number}/{rounds}: "
                + "; ".join(
                    f"{kind} {result['enabled'][kind]['us_per_span']:.1f} vs "
                    f"{result['disabled'][kind]['us_per_span']:.1f} us/span"
                    for kind in kinds
                )
            )
    return per_round


def measure(
    conn: psycopg.Connection,
    rounds: int,
    statements: int = INGEST_STATEMENTS,
    single_rows: int = INGEST_SINGLE_ROWS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Alternated, paired blocks of both arms per way; medians; every row written removed."""
    trace_ids: list[str] = []
    # Every row written is timestamped after this (a literal: on a hypertable, the chunks
    # before it, compressed ones among them, are left out of the DELETE at planning).
    since = conn.execute("SELECT now() - interval '1 minute'").fetchone()[0]

    def timed(kind: str, arm: str, number: int) -> float:
        block = Block(kind, f"ingest{number}{kind}{arm}", statements, single_rows)
        trace_ids.extend(block.trace_ids)
        _set_trigger(conn, arm == "enabled")
        return block.run(conn) * 1e6

    try:
        per_round = _alternated_rounds(rounds, KINDS, timed, log, "ingest")
    finally:
        _set_trigger(conn, True)
        removed = conn.execute(_delete_since(since), (trace_ids,)).rowcount
    return {
        "rounds": rounds,
        "statements_per_block": statements,
        "rows_per_statement": ROWS_PER_STATEMENT,
        "single_rows_per_block": single_rows,
        "summary": {kind: _overhead(per_round, kind) for kind in KINDS},
        "per_round": per_round,
        "rows_removed": removed,
    }


def _set_delete_capture(conn: psycopg.Connection, enabled: bool, hypertable: bool) -> None:
    """Capture of DELETE on or off: a plain store's statement trigger; on a hypertable, the
    row trigger's copies on every chunk, which session_replication_role = replica skips
    (nothing of this project's fires then for a DELETE on a hypertable)."""
    if hypertable:
        conn.execute(f"SET session_replication_role = {'origin' if enabled else 'replica'}")
    else:
        action = "ENABLE" if enabled else "DISABLE"
        conn.execute(f"ALTER TABLE {TRACES_TABLE} {action} TRIGGER {CAPTURE_TRIGGERS['DELETE']}")


def measure_deletes(
    conn: psycopg.Connection,
    rounds: int,
    *,
    hypertable: bool,
    statements: int = INGEST_STATEMENTS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """What capturing a DELETE costs: spans just written (1,000-row INSERTs, not timed) are
    deleted again by 1,000-row DELETEs (their trace_ids, and their time as a literal, so that
    a hypertable's older chunks are left out at planning), capture enabled against disabled,
    in alternated pairs as :func:`measure`'s. Their inserts were captured, so the next
    refresh finds every one of those traces gone, whichever arm deleted it."""
    delete = _delete_since(conn.execute("SELECT now() - interval '1 minute'").fetchone()[0])

    def timed(kind: str, arm: str, number: int) -> float:
        block = Block("insert", f"delete{number}{arm}", statements, 0)
        for statement in block.payload:
            conn.execute(statement)
        batches = [block.trace_ids[k::statements] for k in range(statements)]

        def deletes() -> None:
            for ids in batches:
                conn.execute(delete, (ids,))

        _set_delete_capture(conn, arm == "enabled", hypertable)
        try:
            return _timed(deletes) / block.spans * 1e6
        finally:
            _set_delete_capture(conn, True, hypertable)

    try:
        per_round = _alternated_rounds(rounds, ("delete",), timed, log, "delete")
    finally:
        _set_delete_capture(conn, True, hypertable)
    return {
        "rounds": rounds,
        "statements_per_block": statements,
        "rows_per_statement": ROWS_PER_STATEMENT,
        "capture": "row trigger on every chunk" if hypertable else "statement trigger",
        "summary": _overhead(per_round, "delete"),
        "per_round": per_round,
    }
