"""A steady ingest, written as an OpenTelemetry collector writes spans (the freshness benchmark).

A thread with its own connection. New traces begin at ``rate / 10`` per second
(1 to 19 spans each, 10 on average, as the loaded ones: bench/generate.py); a
trace's spans end over 0.2 to 2 seconds, children before their root, and each is
exported when it ends. Every 100 to 200 ms, one ``INSERT`` of every span exported
since the last (about 150 at 1,000 spans/s), committed on its own. One trace in
LATE_TRACE_EVERY gets one more span 5 to 60 seconds after its root ended (a late
span, timestamped in its trace's time). The numbers are bench/workload.py's.

While :attr:`Collector.sampling` is set, one trace in ``sample_every`` is
sampled: when the INSERT that holds its first span has committed, ``on_first_span``
gets its trace_id and the moment the commit returned (wall clock, ``time.time()``).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import psycopg

from bench.measure import percentile
from bench.workload import (
    COLLECTOR_BATCH_SECONDS,
    LATE_SPAN_DELAY_SECONDS,
    LATE_TRACE_EVERY,
    SAMPLE_EVERY,
    SPAN_COLUMN_LIST,
    SPANS_PER_TRACE,
    TRACE_SECONDS,
    span_tail,
)
from cnpg_trace_summaries.contract import SPAN_COLUMNS, TRACES_TABLE

log = logging.getLogger(__name__)

MAX_SPANS = 19  # spans of a trace: 1 to 19, 10 on average (as the loaded traces)


@cache
def insert_statement(rows: int) -> str:
    """One INSERT of ``rows`` spans, every value a parameter."""
    row = "(" + ", ".join(["%s"] * len(SPAN_COLUMNS)) + ")"
    return f"INSERT INTO {TRACES_TABLE} ({SPAN_COLUMN_LIST}) VALUES " + ", ".join([row] * rows)


@dataclass(order=True)
class _Export:
    """A span waiting for its export time; ``first`` marks a sampled trace's first span."""

    at: float
    serial: int
    row: tuple = field(compare=False)
    trace_id: str = field(compare=False)
    first: bool = field(compare=False, default=False)


def _span_id(trace_id: str, span: int) -> str:
    return hashlib.md5(f"{trace_id}.{span}".encode()).hexdigest()[:16]


class Collector(threading.Thread):
    """Writes ``rate`` spans per second into otel_traces until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        rate: int,
        on_first_span: Callable[[str, float], None],
        *,
        sample_every: int = SAMPLE_EVERY,
        tag: str = "collector",
        seed: int = 0,
    ):
        super().__init__(name="collector", daemon=True)
        self.url = url
        self.rate = rate
        self.on_first_span = on_first_span
        self.sample_every = sample_every
        self.tag = tag
        self.random = random.Random(seed)
        self.sampling = True
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._queue: list[_Export] = []
        self._serial = 0
        self._traces = 0
        self._owed = 0.0  # traces due but not begun yet (fractions carry over)
        self.counts = {"traces": 0, "sampled": 0, "late_spans": 0, "spans": 0, "batches": 0}
        self.latencies: list[float] = []  # seconds per INSERT and its commit
        self.late_batches = 0  # batches that began over 100 ms after their time
        self.started_at = self.stopped_at = 0.0

    # -- the traces --------------------------------------------------------------
    def _push(self, at: float, row: tuple, trace_id: str, first: bool = False) -> None:
        self._serial += 1
        heapq.heappush(self._queue, _Export(at, self._serial, row, trace_id, first))

    def _begin_trace(self, now: float) -> None:
        """A new trace beginning at ``now``: its spans queued at the moments they end."""
        self._traces += 1
        number = self._traces
        trace_id = hashlib.md5(f"{self.tag}.{number}".encode()).hexdigest()
        spans = 1 + self.random.randrange(MAX_SPANS)
        length = self.random.uniform(*TRACE_SECONDS)
        sampled = self.sampling and number % self.sample_every == 0
        begin_ns = int(now * 1e9)
        ends = []
        for s in range(spans):
            start = length * s / (2 * spans)  # the root starts first, children after
            end = length if s == 0 else start + (length - start) * self.random.uniform(0.2, 0.95)
            parent = None if s == 0 else _span_id(trace_id, (s - 1) // 2)
            row = (
                datetime.fromtimestamp(now + start, UTC), trace_id, _span_id(trace_id, s), parent,
                f"GET /api/v1/{number % 17}" if s == 0 else f"rpc.call-{s % 5}",
                2 if s == 0 or s % 2 == 0 else 3,
                begin_ns + int(start * 1e9), begin_ns + int(end * 1e9),
                *span_tail(number, s, spans - 1),
            )  # fmt: skip
            ends.append((end, row))
        first = min(end for end, _ in ends)
        for end, row in ends:
            self._push(now + end, row, trace_id, sampled and end == first)
            sampled = sampled and end != first  # one first span, even on a tie
        if number % LATE_TRACE_EVERY == LATE_TRACE_EVERY // 2:
            late = length + self.random.uniform(*LATE_SPAN_DELAY_SECONDS)
            row = (
                datetime.fromtimestamp(now + length / 2, UTC), trace_id, _span_id(trace_id, spans),
                _span_id(trace_id, 0), "late.db", 3,
                begin_ns + int(length / 2 * 1e9), begin_ns + int(length * 1e9),
                *span_tail(number, spans, spans),
            )  # fmt: skip
            self._push(now + late, row, trace_id)
            self.counts["late_spans"] += 1
        if number % self.sample_every == 0 and self.sampling:
            self.counts["sampled"] += 1
        self.counts["traces"] += 1

    def _due(self, now: float) -> list[_Export]:
        due = []
        while self._queue and self._queue[0].at <= now:
            due.append(heapq.heappop(self._queue))
        return due

    # -- the thread --------------------------------------------------------------------
    def run(self) -> None:
        try:
            with psycopg.connect(self.url) as conn:
                self._write(conn)
        except BaseException as error:  # reported by stop()
            self.error = error
            log.exception("the collector stopped")

    def _write(self, conn: psycopg.Connection) -> None:
        self.started_at = last = time.time()
        next_at = time.monotonic()
        while not self._halt.is_set():
            next_at += self.random.uniform(*COLLECTOR_BATCH_SECONDS)
            wait = next_at - time.monotonic()
            if wait > 0:
                self._halt.wait(wait)
            elif wait < -0.1:
                self.late_batches += 1
                next_at = time.monotonic()  # no burst to catch up: a collector just sends more
            now = time.time()
            self._owed += (now - last) * self.rate / SPANS_PER_TRACE
            last = now
            while self._owed >= 1:
                self._owed -= 1
                self._begin_trace(now)
            due = self._due(now)
            if not due:
                continue
            params = [value for export in due for value in export.row]
            started = time.perf_counter()
            conn.execute(insert_statement(len(due)), params)
            conn.commit()
            committed = time.time()
            self.latencies.append(time.perf_counter() - started)
            self.counts["spans"] += len(due)
            self.counts["batches"] += 1
            for export in due:
                if export.first:
                    self.on_first_span(export.trace_id, committed)
        self.stopped_at = time.time()

    def stop(self) -> dict:
        """Stop writing (spans not yet exported are dropped); what was written, as a dict."""
        self._halt.set()
        self.join()
        if self.error:
            raise RuntimeError(f"the collector failed: {self.error}") from self.error
        return self.summary()

    def summary(self) -> dict:
        seconds = max(1e-9, (self.stopped_at or time.time()) - self.started_at)
        latencies = self.latencies or [0.0]
        return {
            **self.counts,
            "seconds": seconds,
            "spans_per_second": self.counts["spans"] / seconds,
            "spans_per_batch": self.counts["spans"] / max(1, self.counts["batches"]),
            "insert_ms_p50": percentile(latencies, 0.5) * 1000,
            "insert_ms_p99": percentile(latencies, 0.99) * 1000,
            "insert_ms_max": max(latencies) * 1000,
            "insert_ms_mean": statistics.fmean(latencies) * 1000,
            "late_batches": self.late_batches,
        }
