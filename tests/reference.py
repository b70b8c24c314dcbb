"""A pure-Python reference of the semantics (docs/ARCHITECTURE.md, "Semantics of one summary row").

The view must agree with this on any data; tests/test_semantics.py checks it
does, on named examples and on generated trace sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(days=7)
STATUS_ERROR = 2


@dataclass(frozen=True)
class Span:
    timestamp: datetime
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str | None = None
    kind: int | None = None
    start_time_unix_nano: int | None = None
    end_time_unix_nano: int | None = None
    service_name: str | None = None
    status_code: int | None = None
    status_message: str | None = None


def byte_order(text: str) -> bytes:
    """PostgreSQL's "C" collation compares the UTF-8 bytes."""
    return text.encode("utf-8")


def is_root(span: Span) -> bool:
    return span.parent_span_id is None or span.parent_span_id == ""


def nulls_last(value: object) -> tuple[bool, bytes]:
    return (value is None, b"" if value is None else byte_order(str(value)))


def root_order(span: Span) -> tuple:
    """Earliest start first, unknown starts last, then the smallest span_id.

    Copies of one root span (same start and span_id) are told apart by their
    other root columns, compared as text in byte order with NULL last.
    """
    start = span.start_time_unix_nano
    return (
        start is None,
        start if start is not None else 0,
        byte_order(span.span_id),
        *(
            nulls_last(value)
            for value in (
                span.name,
                span.service_name,
                span.kind,
                span.status_code,
                span.status_message,
            )
        ),
    )


def summarize(spans: list[Span], now: datetime) -> dict[str, dict]:
    """The rows of otel_trace_summaries for ``spans``, refreshed at ``now``."""
    traces: dict[str, list[Span]] = {}
    for span in spans:
        if span.trace_id and span.timestamp > now - WINDOW:
            traces.setdefault(span.trace_id, []).append(span)
    return {trace_id: summarize_trace(trace_spans) for trace_id, trace_spans in traces.items()}


def summarize_trace(spans: list[Span]) -> dict:
    roots = sorted((s for s in spans if is_root(s)), key=root_order)
    root = roots[0] if roots else None
    starts = [s.start_time_unix_nano for s in spans if s.start_time_unix_nano is not None]
    ends = [s.end_time_unix_nano for s in spans if s.end_time_unix_nano is not None]
    start = min(starts) if starts else None
    end = max(ends) if ends else None
    return {
        "trace_id": spans[0].trace_id,
        "timestamp": max(s.timestamp for s in spans),
        "root_span_id": root and root.span_id,
        "root_span_name": root and root.name,
        "root_service_name": root and root.service_name,
        "root_span_kind": root and root.kind,
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": None if start is None or end is None else max(end - start, 0) / 1_000_000,
        "status_code": root and root.status_code,
        "status_message": root and root.status_message,
        "service_set": sorted(
            {s.service_name for s in spans if s.service_name is not None}, key=byte_order
        ),
        "span_count": len(spans),
        "error_count": sum(1 for s in spans if s.status_code == STATUS_ERROR),
    }
