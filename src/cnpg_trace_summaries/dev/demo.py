"""Realistic demo spans: several services, nested calls, a few errors.

Traces look like what an OpenTelemetry collector writes for a small shop:
a root SERVER span at the edge, client/server pairs down a call tree across
services, internal spans, about 3 % of traces failing somewhere (status 2),
most spans with status unset (0), some OK (1). Spans are written ordered by
timestamp and interleaved across traces, as a collector writes them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cnpg_trace_summaries.contract import (
    SPAN_COLUMNS,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    TRACES_TABLE,
)
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql.render import SCHEMA

# OTLP span kinds.
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = 1, 2, 3, 4, 5

# service -> (operations it serves, services it calls)
TOPOLOGY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "frontend": (
        ("GET /", "GET /product/{id}", "POST /cart", "POST /checkout"),
        ("catalog", "cart", "checkout", "recommendation", "auth"),
    ),
    "auth": (("VerifyToken",), ()),
    "catalog": (("GetProduct", "ListProducts", "SearchProducts"), ("inventory",)),
    "recommendation": (("ListRecommendations",), ("catalog",)),
    "cart": (("GetCart", "AddItem", "EmptyCart"), ("inventory",)),
    "checkout": (("PlaceOrder",), ("cart", "payment", "shipping", "currency", "email")),
    "payment": (("Charge",), ("currency",)),
    "shipping": (("GetQuote", "ShipOrder"), ()),
    "currency": (("Convert",), ()),
    "inventory": (("Reserve", "GetStock"), ()),
    "email": (("SendOrderConfirmation",), ()),
}
ROOT_SERVICES = ("frontend",) * 9 + ("checkout",)  # a few traces start at a worker
ERROR_MESSAGES = ("deadline exceeded", "connection refused", "card declined", "out of stock")


@dataclass(frozen=True)
class Span:
    timestamp: datetime
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    service_name: str
    status_code: int
    status_message: str

    def row(self) -> tuple:
        """The values for otel_traces, in SPAN_COLUMNS order."""
        return (
            self.timestamp,
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.name,
            self.kind,
            self.start_time_unix_nano,
            self.end_time_unix_nano,
            self.service_name,
            "1.4.2",
            f"{self.service_name}-7d9f8-{int(self.span_id[:2], 16) % 3}",
            "io.opentelemetry.demo",
            "1.0.0",
            self.status_code,
            self.status_message,
            json.dumps({"demo": True}),
            json.dumps({"service.name": self.service_name}),
            "[]",
            "[]",
        )


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


class TraceFactory:
    """Builds one trace at a time from a seeded random generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def _id(self, hex_digits: int) -> str:
        return f"{self.rng.getrandbits(hex_digits * 4):0{hex_digits}x}"

    def trace(self, started: datetime) -> list[Span]:
        trace_id = self._id(32)
        fail = self.rng.random() < 0.03
        spans: list[Span] = []
        self._call(
            spans,
            trace_id,
            "",
            ROOT_SERVICES[self.rng.randrange(len(ROOT_SERVICES))],
            started,
            depth=0,
            fail=fail,
        )
        return spans

    def _call(
        self,
        spans: list[Span],
        trace_id: str,
        parent: str,
        service: str,
        start: datetime,
        depth: int,
        fail: bool,
    ) -> tuple[datetime, bool]:
        """Add a server span for ``service`` and its downstream calls; return (end, failed)."""
        rng = self.rng
        operations, callees = TOPOLOGY[service]
        span_id = self._id(16)
        cursor = start + timedelta(microseconds=rng.randint(50, 400))
        failed = False
        if depth < 3 and callees:
            for callee in rng.sample(callees, k=rng.randint(0, min(3, len(callees)))):
                client_id = self._id(16)
                child_end, child_failed = self._call(
                    spans,
                    trace_id,
                    client_id,
                    callee,
                    cursor,
                    depth + 1,
                    fail and not failed and rng.random() < 0.5,
                )
                client_end = child_end + timedelta(microseconds=rng.randint(20, 200))
                spans.append(
                    self._span(
                        trace_id,
                        client_id,
                        span_id,
                        f"{callee}/call",
                        KIND_CLIENT,
                        service,
                        cursor,
                        client_end,
                        STATUS_ERROR if child_failed else STATUS_UNSET,
                    )
                )
                failed = failed or child_failed
                cursor = client_end
        if rng.random() < 0.3:  # a database or cache call inside the service
            inner_end = cursor + timedelta(microseconds=rng.randint(100, 5_000))
            spans.append(
                self._span(
                    trace_id,
                    self._id(16),
                    span_id,
                    "db.query",
                    KIND_INTERNAL,
                    service,
                    cursor,
                    inner_end,
                    STATUS_UNSET,
                )
            )
            cursor = inner_end
        if fail and not failed:
            failed = True  # this service is where the trace breaks
        end = cursor + timedelta(microseconds=rng.randint(100, 20_000))
        status = STATUS_ERROR if failed else (STATUS_OK if rng.random() < 0.2 else STATUS_UNSET)
        spans.append(
            self._span(
                trace_id,
                span_id,
                parent,
                operations[rng.randrange(len(operations))],
                KIND_SERVER,
                service,
                start,
                end,
                status,
            )
        )
        return end, failed

    def _span(
        self,
        trace_id: str,
        span_id: str,
        parent: str,
        name: str,
        kind: int,
        service: str,
        start: datetime,
        end: datetime,
        status: int,
    ) -> Span:
        message = self.rng.choice(ERROR_MESSAGES) if status == STATUS_ERROR else ""
        return Span(
            timestamp=start,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            kind=kind,
            start_time_unix_nano=_nanos(start),
            end_time_unix_nano=_nanos(end),
            service_name=service,
            status_code=status,
            status_message=message,
        )


def generate_spans(
    traces: int,
    *,
    seed: int = 7,
    now: datetime | None = None,
    span_hours: float = 6 * 24,
    stale_fraction: float = 0.02,
) -> Iterator[Span]:
    """Spans of ``traces`` traces started over the last ``span_hours`` hours.

    A ``stale_fraction`` of the traces is older than the 7-day window, so the
    view visibly leaves them out. Spans come out ordered by timestamp.
    """
    rng = random.Random(seed)
    factory = TraceFactory(rng)
    now = now or datetime.now(UTC)
    spans: list[Span] = []
    for _ in range(traces):
        if rng.random() < stale_fraction:
            started = now - timedelta(days=8, seconds=rng.uniform(0, 86_400))
        else:
            started = now - timedelta(seconds=rng.uniform(1, span_hours * 3600))
        spans.extend(factory.trace(started))
    spans.sort(key=lambda span: span.timestamp)
    yield from spans


def load_spans(
    place: Place,
    spans: Iterator[Span],
    total: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    every: int = 5_000,
) -> int:
    """COPY spans into otel_traces; return how many were written."""
    columns = ", ".join(f'"{name}"' for name in SPAN_COLUMNS)
    written = 0
    statement = place.sql(f"COPY {SCHEMA}.{TRACES_TABLE} ({columns}) FROM STDIN")
    with place.conn.cursor() as cur, cur.copy(statement) as copy:
        for span in spans:
            copy.write_row(span.row())
            written += 1
            if progress and written % every == 0:
                progress(written, total)
    if progress:
        progress(written, total)
    return written
