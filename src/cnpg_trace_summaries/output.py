"""What the console command shows: lines for people, and JSON for machines."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cnpg_trace_summaries import health, pgcron, summaries


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, indent=2)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if is_dataclass(value):
        return asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# -- the listing ------------------------------------------------------------------
HEADERS = ["last span", "trace", "root service", "root span", "ms", "spans", "errors", "status",
           "services"]  # fmt: skip


def format_row(row: dict[str, Any]) -> list[str]:
    duration = row["duration_ms"]
    status = {None: "-", 0: "unset", 1: "ok", 2: "ERROR"}.get(row["status_code"], "?")
    return [
        row["timestamp"].astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        row["trace_id"][:16],
        row["root_service_name"] or "(no root)",
        (row["root_span_name"] or "")[:24],
        "-" if duration is None else f"{duration:,.1f}",
        str(row["span_count"]),
        str(row["error_count"]),
        status,
        ",".join(row["service_set"]),
    ]


def render_table(headers: Sequence[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def listing(mode: str, total: int, rows: list[dict], cron: pgcron.Found) -> str:
    lines = [
        f"newest {len(rows)} of {total:,} traces in otel_trace_summaries ({mode} mode):\n",
        render_table(HEADERS, [format_row(r) for r in rows]),
        "",
    ]
    job = cron.job
    if job:
        lines.append(
            f"pg_cron job {job.jobid} '{job.jobname}': {job.schedule}  {job.command}"
            f"  ({'active' if job.active else 'INACTIVE'})"
        )
    else:
        lines.append(
            f"no pg_cron refresh job ({cron.note}): refresh by hand (trace-summaries refresh)"
        )
    return "\n".join(lines)


# -- refreshes ------------------------------------------------------------------------
def outcome(result: summaries.RefreshOutcome) -> str:
    stamp = time.strftime("%H:%M:%S")
    if not result.refreshed:
        return f"{stamp} skipped: {result.reason}"
    if result.mode == "view":
        # --full changes nothing here: a materialized view's refresh is always complete.
        return f"{stamp} refreshed otel_trace_summaries concurrently in {result.seconds:.2f}s"
    detail = result.detail
    written = plural(detail.get("upserted", 0), "row")
    deleted = f"{detail.get('deleted', 0):,} deleted"
    if detail.get("kind") == "full":
        what = (
            f"rebuilt everything in {plural(detail.get('slices', 1), 'slice')} and "
            f"{plural(detail.get('ranges', 1), 'range')} "
            f"({result.reason or detail.get('reason')}): {written} written, {deleted}"
        )
    else:
        what = f"{plural(detail.get('keys', 0), 'trace')} recomputed, {written} written, {deleted}"
    return (
        f"{stamp} refreshed otel_trace_summaries (incremental mode) in {result.seconds:.2f}s: "
        f"{what}"
    )


# -- status -----------------------------------------------------------------------------
def _ago(seconds: float | None, now: datetime) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f}s ago"


def _at(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({seconds:.0f}s ago)"


def health_payload(report: health.Health) -> dict[str, Any]:
    cron = report.cron
    last = cron.last_run
    return {
        "healthy": report.healthy,
        "problems": list(report.problems),
        "mode": report.mode,
        "refresh_interval": report.refresh_interval,
        "checked_at": report.checked_at,
        "metrics": report.metrics,
        "pg_cron_database": cron.location.database,
        "pg_cron_note": cron.note,
        "refresh_job": cron.job,
        "job_missing": cron.missing,
        "last_run": last and {**asdict(last), "seconds": last.seconds},
        "last_success_at": cron.last_success_at,
        "cron_metrics": report.cron_metrics,
        "refresh_lock_holder": report.lock_holder,
    }


def health_lines(report: health.Health) -> str:
    m, now = report.metrics, report.checked_at
    lines = [
        f"otel_trace_summaries: {'OK' if report.healthy else 'PROBLEM'} ({report.mode} mode, "
        f"refreshed every {report.refresh_interval})",
        f"  rows               about {m['estimated_rows']:,.0f}",
        f"  newest trace       {_ago(m['newest_trace_age_seconds'], now)}",
        f"  newest span        {_ago(m['newest_span_age_seconds'], now)}",
        f"  lag                {m['lag_seconds']:.0f}s "
        f"(stale after {report.stale_after_seconds:.0f}s)",
    ]
    if report.mode == "incremental":
        took = m["last_refresh_duration_seconds"]
        kind = {1: "full", 0: "incremental"}.get(m["last_refresh_full"], "-")
        lines += [
            f"  last refresh       {kind} {_ago(m['last_refresh_age_seconds'], now)}"
            + ("" if took is None else f", took {took:.2f}s"),
            f"  backlog            "
            f"{plural(int(m['backlog_traces'] or 0), 'changed trace id')} queued",
        ]
        if m["rebuild_pending"]:
            lines.append(f"  rebuild pending    for {m['rebuild_pending_seconds'] or 0:.0f}s")
    holder = report.lock_holder
    if holder:
        lines.append(
            f"  refresh lock       held by pid {holder['pid']} "
            f"({holder['application_name'] or '-'}, {holder['state'] or 'state hidden'})"
        )
    cron = report.cron
    job = cron.job
    if job is None:
        what = "MISSING" if cron.missing else "none"
        lines.append(
            f"  pg_cron job        {what} ({cron.note}): `trace-summaries repair` schedules it "
            f"where pg_cron is; without pg_cron, `trace-summaries refresh --every "
            f"{report.refresh_interval}` or a CronJob"
        )
    else:
        lines.append(
            f"  pg_cron job        {job.jobid} '{job.jobname}' {job.schedule}"
            f" in database {cron.location.database}{'' if job.active else ' (INACTIVE)'}"
        )
        last = cron.last_run
        if last is None:
            lines.append("  last run           none yet")
        else:
            took = "" if last.seconds is None else f", took {last.seconds:.2f}s"
            lines.append(f"  last run           {last.status} {_at(last.started_at, now)}{took}")
        lines.append(f"  last success       {_at(cron.last_success_at, now)}")
    lines += [f"  problem            {problem}" for problem in report.problems]
    return "\n".join(lines)


# -- verify ------------------------------------------------------------------------------
def verification(result: summaries.Verification) -> str:
    if result.note and not result.exact and result.missing == result.unexpected == 0:
        return f"otel_trace_summaries ({result.mode} mode): {result.note}"
    if result.note and result.exact:
        return f"otel_trace_summaries ({result.mode} mode): EXACT: {result.note}"
    verdict = "EXACT" if result.exact else "DIFFERS"
    lines = [
        f"otel_trace_summaries: {verdict}: {result.rows:,} rows compared with the definition "
        f"at window boundary {result.boundary}; {result.missing:,} missing, "
        f"{result.unexpected:,} unexpected; {result.pending_keys:,} traces with changes queued "
        "for the next refresh were left out"
    ]
    if result.note:
        lines.append(f"  {result.note}")
    lines += [f"  {example}" for example in result.examples]
    return "\n".join(lines)
