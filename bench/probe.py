"""Time-to-list: when a sampled trace first shows in otel_trace_summaries (the freshness benchmark).

A thread with its own connection (autocommit: every query its own snapshot). Every
``interval`` seconds it asks for every pending trace at once::

    SELECT trace_id FROM otel_trace_summaries WHERE trace_id = ANY(%s)

A trace found is listed at the moment that query began (wall clock): it was not
there at the previous query's beginning, so the true moment lies within one
interval before. Its time-to-list is that moment minus the commit of its first
span (:class:`bench.collector.Collector` reports the commit).
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from bench.measure import percentile
from bench.workload import PROBE_SECONDS
from cnpg_trace_summaries.contract import SUMMARIES

log = logging.getLogger(__name__)

FIND_SQL = f"SELECT trace_id FROM {SUMMARIES} WHERE trace_id = ANY(%s)"


class ListingProbe(threading.Thread):
    """Polls for the pending sampled traces until :meth:`stop`."""

    def __init__(self, url: str, interval: float = PROBE_SECONDS):
        super().__init__(name="listing-probe", daemon=True)
        self.url = url
        self.interval = interval
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}  # trace_id: first span committed at
        self.listed: list[dict] = []  # {"trace_id", "committed_at", "listed_at"}
        self.query_ms: list[float] = []

    def add(self, trace_id: str, committed_at: float) -> None:
        """A sampled trace whose first span committed at ``committed_at`` (the collector's call)."""
        with self._lock:
            self._pending.setdefault(trace_id, committed_at)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                self._poll(conn)
        except BaseException as error:  # reported by stop()
            self.error = error
            log.exception("the listing probe stopped")

    def _poll(self, conn: psycopg.Connection) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            next_at = max(next_at + self.interval, time.monotonic())
            self._halt.wait(max(0.0, next_at - time.monotonic()))
            with self._lock:
                ids = list(self._pending)
            if not ids:
                continue
            asked_at = time.time()
            started = time.perf_counter()
            found = [row[0] for row in conn.execute(FIND_SQL, (ids,))]
            self.query_ms.append((time.perf_counter() - started) * 1000)
            with self._lock:
                for trace_id in found:
                    committed_at = self._pending.pop(trace_id)
                    self.listed.append(
                        {"trace_id": trace_id, "committed_at": committed_at, "listed_at": asked_at}
                    )

    def stop(self) -> dict:
        """Stop polling; what it saw, as a dict (the traces never listed are ``unlisted``)."""
        self._halt.set()
        self.join()
        if self.error:
            raise RuntimeError(f"the listing probe failed: {self.error}") from self.error
        queries = self.query_ms or [0.0]
        with self._lock:
            unlisted = [{"trace_id": t, "committed_at": c} for t, c in self._pending.items()]
        return {
            "interval_s": self.interval,
            "queries": len(self.query_ms),
            "query_ms_p50": percentile(queries, 0.5),
            "query_ms_p99": percentile(queries, 0.99),
            "listed": self.listed,
            "unlisted": unlisted,
        }
