"""``trace-summaries``: the console command.

    trace-summaries local start|stop|status|url   the make-run cluster
    trace-summaries demo [--traces N]             load demo spans, refresh, list
    trace-summaries list [--limit N] [--json]     newest summaries and the pg_cron job
    trace-summaries refresh [--every SECONDS]     a concurrent refresh now, or in a loop
    trace-summaries status [--json]               freshness; exit 2 when stale or failing

It prints for people; ``--json`` where a machine reads the output. Errors end
with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from cnpg_trace_summaries import demo, summaries
from cnpg_trace_summaries.database import ConfigError, resolve_database_url
from cnpg_trace_summaries.localdb import LocalCluster, LocalClusterError
from cnpg_trace_summaries.progress import progress_bar

PROG = "trace-summaries"


class CommandError(Exception):
    """Ends the command with this message and exit status 1."""


def libpq_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def connect(**kwargs: Any) -> psycopg.Connection:
    url = resolve_database_url()
    try:
        return psycopg.connect(libpq_conninfo(url), **kwargs)
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split()).removeprefix("connection failed: ")
        raise CommandError(
            f"cannot connect to {url.render_as_string(hide_password=True)}: {reason}"
        ) from None


# -- local --------------------------------------------------------------------
def cmd_local(args: argparse.Namespace) -> int:
    cluster = LocalCluster.from_checkout()
    if args.action == "start":
        cluster.start()
        print(f"local PostgreSQL is running: {cluster.libpq_url()}")
    elif args.action == "stop":
        print("local PostgreSQL stopped" if cluster.stop() else "local PostgreSQL was not running")
    elif args.action == "status":
        running = cluster.is_running()
        print(f"local PostgreSQL is {'running' if running else 'stopped'}")
        return 0 if running else 3
    elif args.action == "url":
        print(cluster.libpq_url())
    return 0


# -- demo ---------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    if args.traces < 1:
        raise CommandError("--traces must be at least 1")
    # A fresh seed by default: the same seed again would reuse trace ids, and
    # the new spans would join the traces already loaded.
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    sys.stderr.write(f"generating {args.traces:,} demo traces (seed {seed})...\n")
    spans = list(demo.generate_spans(args.traces, seed=seed))
    with connect() as conn:
        require_view(conn)
        demo.load_spans(conn, iter(spans), total=len(spans), progress=progress_bar("loading spans"))
        conn.commit()
        conn.autocommit = True
        sys.stderr.write(describe_outcome(summaries.refresh_unless_running(conn)) + "\n\n")
        print_listing(conn, limit=10, as_json=False)
    return 0


# -- list ---------------------------------------------------------------------
def require_view(conn: psycopg.Connection) -> None:
    found = conn.execute("SELECT to_regclass('otel_trace_summaries')").fetchone()[0]
    if found is None:
        raise CommandError(
            "otel_trace_summaries does not exist in this database; run `alembic upgrade head` first"
        )


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


def print_listing(conn: psycopg.Connection, *, limit: int, as_json: bool) -> None:
    rows = summaries.newest(conn, limit)
    job = summaries.refresh_job(conn)
    total = conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone()[0]
    if as_json:
        print(
            json.dumps(
                {"traces_in_view": total, "newest": rows, "refresh_job": job and job.__dict__},
                default=_json_default,
                indent=2,
            )
        )
        return
    headers = [
        "last span",
        "trace",
        "root service",
        "root span",
        "ms",
        "spans",
        "errors",
        "status",
        "services",
    ]
    print(f"newest {len(rows)} of {total:,} traces in otel_trace_summaries:\n")
    print(render_table(headers, [format_row(r) for r in rows]))
    print()
    if job:
        print(
            f"pg_cron job {job.jobid} '{job.jobname}': {job.schedule}  {job.command}"
            f"  ({'active' if job.active else 'INACTIVE'})"
        )
    else:
        print("no pg_cron refresh job: refresh by hand (trace-summaries refresh)")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    with connect() as conn:
        require_view(conn)
        print_listing(conn, limit=args.limit, as_json=args.json)
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    if args.every is not None and not args.every > 0:
        raise CommandError("--every must be a positive number of seconds")
    if args.every is None:
        with connect(autocommit=True) as conn:
            require_view(conn)
            outcome = summaries.refresh_unless_running(conn)
        print(describe_outcome(outcome))
        return 0 if outcome.refreshed else 3
    return refresh_forever(args.every)


def describe_outcome(outcome: summaries.RefreshOutcome) -> str:
    stamp = time.strftime("%H:%M:%S")
    if outcome.refreshed:
        return f"{stamp} refreshed otel_trace_summaries concurrently in {outcome.seconds:.2f}s"
    return f"{stamp} skipped: {outcome.reason}"


def refresh_forever(every: float) -> int:
    """Refresh every ``every`` seconds until Ctrl-C or SIGTERM; failures are retried next tick."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"refreshing otel_trace_summaries every {every:g}s (Ctrl-C stops)", flush=True)
    conn: psycopg.Connection | None = None
    next_tick = time.monotonic()
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = connect(autocommit=True)
                    require_view(conn)
                print(describe_outcome(summaries.refresh_unless_running(conn)), flush=True)
            except (psycopg.Error, CommandError) as error:
                message = " ".join(str(error).split())
                print(
                    f"{time.strftime('%H:%M:%S')} FAILED: {message}; retrying in {every:g}s",
                    file=sys.stderr,
                    flush=True,
                )
                if conn is not None:
                    conn.close()
                conn = None
            next_tick += every
            delay = next_tick - time.monotonic()
            if delay < 0:
                print(
                    f"{time.strftime('%H:%M:%S')} the refresh took longer than {every:g}s; "
                    "starting the next one now",
                    file=sys.stderr,
                    flush=True,
                )
                next_tick = time.monotonic()
                delay = 0
            time.sleep(delay)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0
    finally:
        if conn is not None:
            conn.close()


# -- status -------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    with connect(autocommit=True) as conn:
        require_view(conn)
        health = summaries.health(conn, schedule_seconds=args.schedule_seconds)
    if args.json:
        print(json.dumps(health_payload(health), default=_json_default, indent=2))
    else:
        print(render_health(health))
    return 0 if health.healthy else 2


def health_payload(health: summaries.Health) -> dict[str, Any]:
    last = health.last_run
    return {
        "healthy": health.healthy,
        "problems": list(health.problems),
        "checked_at": health.checked_at,
        "rows": health.rows,
        "size_bytes": health.size_bytes,
        "populated": health.populated,
        "newest_trace_in_view": health.newest_in_view,
        "newest_span": health.newest_span,
        "lag_seconds": health.lag_seconds,
        "stale_after_seconds": health.stale_after_seconds,
        "refresh_job": health.job and health.job.__dict__,
        "last_run": last and {**last.__dict__, "seconds": last.seconds},
        "last_success_at": health.last_success_at,
    }


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({seconds:.0f}s ago)"


def render_health(health: summaries.Health) -> str:
    now = health.checked_at
    lines = [
        f"otel_trace_summaries: {'OK' if health.healthy else 'PROBLEM'}",
        f"  rows               {health.rows:,} ({health.size_bytes / 2**20:.1f} MiB)",
        f"  newest trace       {_ago(health.newest_in_view, now)}",
        f"  newest span        {_ago(health.newest_span, now)}",
        f"  lag                {health.lag_seconds:.0f}s"
        f" (stale after {health.stale_after_seconds:.0f}s)",
    ]
    if health.job is None:
        lines.append(
            "  pg_cron job        none in this database: refresh with "
            "`trace-summaries refresh --every 120` or a CronJob"
        )
    else:
        job = health.job
        lines.append(
            f"  pg_cron job        {job.jobid} '{job.jobname}' {job.schedule}"
            f"{'' if job.active else ' (INACTIVE)'}"
        )
        last = health.last_run
        if last is None:
            lines.append("  last run           none yet")
        else:
            took = "" if last.seconds is None else f", took {last.seconds:.2f}s"
            lines.append(f"  last run           {last.status} {_ago(last.started_at, now)}{took}")
        lines.append(f"  last success       {_ago(health.last_success_at, now)}")
    lines += [f"  problem            {problem}" for problem in health.problems]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Trace summaries for an OpenTelemetry span store on PostgreSQL. "
        "Connects to DATABASE_URL, or to the local cluster of `make run`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the local PostgreSQL cluster of `make run`")
    local.add_argument("action", choices=["start", "stop", "status", "url"])
    local.set_defaults(func=cmd_local)

    demo_parser = sub.add_parser("demo", help="load demo spans, refresh, list the newest traces")
    demo_parser.add_argument("--traces", type=int, default=5_000, help="traces to load (5000)")
    demo_parser.add_argument("--seed", type=int, help="random seed (random by default)")
    demo_parser.set_defaults(func=cmd_demo)

    listing = sub.add_parser("list", help="the newest trace summaries and the pg_cron job")
    listing.add_argument("--limit", type=int, default=10, help="rows to show (10)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_list)

    refresh = sub.add_parser(
        "refresh",
        help="REFRESH MATERIALIZED VIEW CONCURRENTLY now, or every N seconds",
        description="Refresh the view concurrently. Two refreshers never overlap (advisory "
        "lock): a refresh that finds another running is skipped (exit status 3).",
    )
    refresh.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep refreshing, every SECONDS (for deployments without pg_cron)",
    )
    refresh.set_defaults(func=cmd_refresh)

    status = sub.add_parser(
        "status",
        help="is the view fresh? exit 0 when healthy, 2 when stale or the last run failed",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--schedule-seconds",
        type=float,
        default=120,
        help="the refresh schedule; stale after twice this (120)",
    )
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (CommandError, ConfigError, LocalClusterError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"{PROG}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
