"""``trace-summaries``: the console command.

    trace-summaries status [--json]               freshness; exit 2 when stale or failing
    trace-summaries refresh [--every S] [--full]  a refresh now, or in a loop
    trace-summaries verify [--json]               compare with the definition; exit 2 if not exact
    trace-summaries switch view|incremental       switch the mode of an installed database
    trace-summaries list [--limit N] [--json]     newest summaries and the pg_cron job
    trace-summaries demo [--traces N]             load demo spans, refresh, list
    trace-summaries local start|stop|status|url   the make-run cluster

It prints for people; ``--json`` where a machine reads the output. Errors end
with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import create_engine, exc, pool

from cnpg_trace_summaries import __version__, health, migrating, modes, options, summaries
from cnpg_trace_summaries.contract import FALLBACK_REFRESHER, REFRESH_INTERVAL_SECONDS, SUMMARIES
from cnpg_trace_summaries.database import (
    ConfigError,
    connection_failure,
    describe_database_error,
    install_notice_logger,
    libpq_conninfo,
    redact,
    resolve_database_url,
    safe_url,
)
from cnpg_trace_summaries.progress import progress_bar

PROG = "trace-summaries"


class CommandError(Exception):
    """Ends the command with this message and exit status 1."""


def connect(**kwargs: Any) -> psycopg.Connection:
    url = resolve_database_url()
    try:
        return psycopg.connect(libpq_conninfo(url), **kwargs)
    except psycopg.OperationalError as error:
        raise CommandError(connection_failure(safe_url(url), error)) from None


# -- local --------------------------------------------------------------------
def cmd_local(args: argparse.Namespace) -> int:
    from cnpg_trace_summaries.dev.localdb import LocalCluster, LocalClusterError

    try:
        return local_action(LocalCluster.from_checkout(), args.action)
    except LocalClusterError as error:
        raise CommandError(str(error)) from None


def local_action(cluster, action: str) -> int:
    if action == "start":
        cluster.start()
        state = cluster.state()
        print(
            f"local PostgreSQL is running on 127.0.0.1:{state.port} "
            "(its URL, with the password: trace-summaries local url)"
        )
    elif action == "stop":
        print("local PostgreSQL stopped" if cluster.stop() else "local PostgreSQL was not running")
    elif action == "status":
        running = cluster.is_running()
        print(f"local PostgreSQL is {'running' if running else 'stopped'}")
        return 0 if running else 3
    elif action == "url":
        print(cluster.libpq_url())
    return 0


# -- demo ---------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from cnpg_trace_summaries.dev import demo

    if args.traces < 1:
        raise CommandError("--traces must be at least 1")
    # A fresh seed by default: the same seed again would reuse trace ids, and
    # the new spans would join the traces already loaded.
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    sys.stderr.write(f"generating {args.traces:,} demo traces (seed {seed})...\n")
    spans = list(demo.generate_spans(args.traces, seed=seed))
    with connect() as conn:
        summaries.require_mode(conn)
        demo.load_spans(conn, iter(spans), total=len(spans), progress=progress_bar("loading spans"))
        conn.commit()
        conn.autocommit = True
        sys.stderr.write(describe_outcome(summaries.refresh(conn)) + "\n\n")
        print_listing(conn, limit=10, as_json=False)
    return 0


# -- list ---------------------------------------------------------------------
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
    mode = summaries.require_mode(conn)
    rows = summaries.newest(conn, limit)
    job, *_, note = health.find_job(conn, cron_database())
    total = conn.execute(f"SELECT count(*) FROM {SUMMARIES}").fetchone()[0]
    if as_json:
        print(
            json.dumps(
                {
                    "mode": mode,
                    "traces_in_view": total,
                    "newest": rows,
                    "refresh_job": job and job.__dict__,
                },
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
    print(f"newest {len(rows)} of {total:,} traces in otel_trace_summaries ({mode} mode):\n")
    print(render_table(headers, [format_row(r) for r in rows]))
    print()
    if job:
        print(
            f"pg_cron job {job.jobid} '{job.jobname}': {job.schedule}  {job.command}"
            f"  ({'active' if job.active else 'INACTIVE'})"
        )
    else:
        print(f"no pg_cron refresh job ({note}): refresh by hand (trace-summaries refresh)")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    with connect(autocommit=True) as conn:
        print_listing(conn, limit=args.limit, as_json=args.json)
    return 0


def cron_database() -> str:
    return options.value("cron_database", {})


def cmd_refresh(args: argparse.Namespace) -> int:
    if args.every is not None and not args.every > 0:
        raise CommandError("--every must be a positive number of seconds")
    if args.every is None:
        with connect(autocommit=True) as conn:
            outcome = summaries.refresh(conn, full=args.full)
        if args.json:
            print(json.dumps(outcome.__dict__, default=_json_default, indent=2))
        else:
            print(describe_outcome(outcome))
        return 0 if outcome.refreshed else 3
    return refresh_forever(args.every, full=args.full)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def describe_outcome(outcome: summaries.RefreshOutcome) -> str:
    stamp = time.strftime("%H:%M:%S")
    if not outcome.refreshed:
        return f"{stamp} skipped: {outcome.reason}"
    if outcome.mode == "view":
        # --full changes nothing here: a materialized view's refresh is always complete.
        return f"{stamp} refreshed otel_trace_summaries concurrently in {outcome.seconds:.2f}s"
    detail = outcome.detail
    written = plural(detail.get("upserted", 0), "row")
    deleted = f"{detail.get('deleted', 0):,} deleted"
    if detail.get("kind") == "full":
        what = (
            f"rebuilt everything in {plural(detail.get('ranges', 1), 'range')} "
            f"({outcome.reason}): {written} written, {deleted}"
        )
    else:
        what = f"{plural(detail.get('keys', 0), 'trace')} recomputed, {written} written, {deleted}"
    took = f"{outcome.seconds:.2f}s"
    return f"{stamp} refreshed otel_trace_summaries (incremental mode) in {took}: {what}"


def refresh_forever(every: float, *, full: bool = False) -> int:
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
                print(describe_outcome(summaries.refresh(conn, full=full)), flush=True)
                full = False  # once is enough
            except (psycopg.Error, CommandError, summaries.NotInstalledError) as error:
                message = redact(" ".join(str(error).split()))
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


# -- status ---------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    try:
        with connect(autocommit=True) as conn:
            report = health.health(conn, args.schedule_seconds, cron_database())
    except (CommandError, summaries.NotInstalledError, psycopg.Error) as error:
        if args.json:  # a monitoring check that reads JSON gets JSON, then exit status 1
            problem = redact(" ".join(str(error).split()))
            print(json.dumps({"healthy": False, "problems": [problem]}))
        raise
    if args.json:
        print(json.dumps(health_payload(report), default=_json_default, indent=2))
    else:
        print(render_health(report))
    return 0 if report.healthy else 2


def health_payload(report: health.Health) -> dict[str, Any]:
    last = report.last_run
    return {
        "healthy": report.healthy,
        "problems": list(report.problems),
        "mode": report.mode,
        "checked_at": report.checked_at,
        "rows": report.rows,
        "size_bytes": report.size_bytes,
        "populated": report.populated,
        "installed_at": report.installed_at,
        "newest_trace": report.newest_in_view,
        "newest_span": report.newest_span,
        "lag_seconds": report.lag_seconds,
        "stale_after_seconds": report.stale_after_seconds,
        "pg_cron_database": report.cron_database,
        "pg_cron_note": report.cron_note,
        "refresh_job": report.job and report.job.__dict__,
        "last_run": last and {**last.__dict__, "seconds": last.seconds},
        "last_success_at": report.last_success_at,
        "incremental": report.incremental and report.incremental.__dict__,
    }


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({seconds:.0f}s ago)"


def render_health(report: health.Health) -> str:
    now = report.checked_at
    lines = [
        f"otel_trace_summaries: {'OK' if report.healthy else 'PROBLEM'} ({report.mode} mode)",
        f"  rows               {report.rows:,} ({report.size_bytes / 2**20:.1f} MiB)",
        f"  newest trace       {_ago(report.newest_in_view, now)}",
        f"  newest span        {_ago(report.newest_span, now)}",
        f"  lag                {report.lag_seconds:.0f}s"
        f" (stale after {report.stale_after_seconds:.0f}s)",
    ]
    inc = report.incremental
    if inc is not None:
        took = "" if inc.last_refresh_seconds is None else f", took {inc.last_refresh_seconds:.2f}s"
        lines += [
            f"  last refresh       {inc.last_refresh_kind or '-'} {_ago(inc.last_refresh_at, now)}"
            f"{took}",
            f"  backlog            {plural(inc.backlog, 'changed trace id')} queued",
        ]
        if inc.rebuild_requested:
            lines.append(f"  rebuild pending    {inc.rebuild_requested}")
    if report.job is None:
        lines.append(
            f"  pg_cron job        none ({report.cron_note}): refresh with "
            f"`{FALLBACK_REFRESHER}` or a CronJob"
        )
    else:
        job = report.job
        lines.append(
            f"  pg_cron job        {job.jobid} '{job.jobname}' {job.schedule}"
            f" in database {report.cron_database}{'' if job.active else ' (INACTIVE)'}"
        )
        last = report.last_run
        if last is None:
            lines.append("  last run           none yet")
        else:
            took = "" if last.seconds is None else f", took {last.seconds:.2f}s"
            lines.append(f"  last run           {last.status} {_ago(last.started_at, now)}{took}")
        lines.append(f"  last success       {_ago(report.last_success_at, now)}")
    lines += [f"  problem            {problem}" for problem in report.problems]
    return "\n".join(lines)


# -- verify -----------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    with connect(autocommit=True) as conn:
        result = summaries.verify(conn)
    if args.json:
        print(json.dumps(result.__dict__, default=_json_default, indent=2))
    elif result.note:
        print(f"otel_trace_summaries ({result.mode} mode): {result.note}")
    else:
        verdict = "EXACT" if result.exact else "DIFFERS"
        print(
            f"otel_trace_summaries: {verdict}: {result.rows:,} rows compared with the definition "
            f"at window boundary {result.boundary}; {result.missing:,} missing, "
            f"{result.unexpected:,} unexpected; {result.pending_keys:,} traces with changes queued "
            "for the next refresh were left out"
        )
        for example in result.examples:
            print(f"  {example}")
    return 0 if result.exact else 2


# -- switch -----------------------------------------------------------------------
def cmd_switch(args: argparse.Namespace) -> int:
    try:
        lock_timeout = options.duration(args.lock_timeout or options.value("lock_timeout", {}))
    except ValueError as error:
        raise CommandError(f"--lock-timeout must be {error}") from None
    url = resolve_database_url()
    shown = safe_url(url)
    engine = create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={"application_name": f"{migrating.APPLICATION_NAME}: switch"},
    )
    try:
        with engine.connect() as connection:
            migrating.configure_session(connection, lock_timeout)
            with (
                migrating.migration_lock(
                    connection,
                    wait=options.value("migration_lock_wait", {}),
                    lock_timeout=lock_timeout,
                ),
                install_notice_logger(connection),
            ):
                report = modes.switch(connection, args.mode, cron_database=cron_database())
    except (modes.SwitchError, migrating.MigrationLockBusyError) as error:
        raise CommandError(str(error)) from None
    except exc.DBAPIError as error:
        raise CommandError(describe_database_error(error, shown)) from None
    finally:
        engine.dispose()
    if not report.switched:
        print(f"otel_trace_summaries is already in {report.target} mode: nothing to switch")
        if report.removed:
            print(f"removed what an interrupted switch had left: {report.removed}")
        return 0
    print(
        f"switched otel_trace_summaries from {report.source} to {report.target} mode on "
        f"{shown}: built beside the old one in {report.build_seconds:.1f}s, swapped in "
        f"{report.swap_seconds * 1000:.0f} ms"
    )
    if report.job:
        print(report.job)
    return 0


class Parser(argparse.ArgumentParser):
    """Usage errors end like every other error: one line, exit status 1 (2 means unhealthy)."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: {message} (see {PROG} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Trace summaries for an OpenTelemetry span store on PostgreSQL. "
        "Connects to DATABASE_URL, or to the local cluster of `make run`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    status = sub.add_parser(
        "status",
        help="is it fresh? exit 0 when healthy, 2 when stale or the last run failed",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--schedule-seconds",
        type=float,
        default=REFRESH_INTERVAL_SECONDS,
        help=f"the refresh schedule; stale after twice this ({REFRESH_INTERVAL_SECONDS})",
    )
    status.set_defaults(func=cmd_status)

    refresh = sub.add_parser(
        "refresh",
        help="refresh now (either mode), or every N seconds",
        description="View mode: REFRESH MATERIALIZED VIEW CONCURRENTLY. Incremental mode: "
        "recompute what changed. Two refreshers never overlap (advisory lock): a refresh that "
        "finds another running is skipped (exit status 3).",
    )
    refresh.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep refreshing, every SECONDS (for deployments without pg_cron)",
    )
    refresh.add_argument(
        "--full", action="store_true", help="incremental mode: rebuild everything (once)"
    )
    refresh.add_argument("--json", action="store_true", help="machine-readable output")
    refresh.set_defaults(func=cmd_refresh)

    verify = sub.add_parser(
        "verify",
        help="compare the summaries with their definition on the live database (exit 2 if not)",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=cmd_verify)

    switch = sub.add_parser(
        "switch",
        help="switch an installed database between view and incremental mode",
        description="Builds the new relation beside the old one, then swaps them in one "
        "short transaction; readers keep reading throughout.",
    )
    switch.add_argument("mode", choices=["view", "incremental"])
    switch.add_argument(
        "--lock-timeout",
        help="how long the swap may wait for its locks (default: the migrations' lock_timeout, "
        f"{options.OPTIONS['lock_timeout'].env} or {options.OPTIONS['lock_timeout'].default})",
    )
    switch.set_defaults(func=cmd_switch)

    listing = sub.add_parser("list", help="the newest trace summaries and the pg_cron job")
    listing.add_argument("--limit", type=int, default=10, help="rows to show (10)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_list)

    demo_parser = sub.add_parser("demo", help="load demo spans, refresh, list the newest traces")
    demo_parser.add_argument("--traces", type=int, default=5_000, help="traces to load (5000)")
    demo_parser.add_argument("--seed", type=int, help="random seed (random by default)")
    demo_parser.set_defaults(func=cmd_demo)

    local = sub.add_parser("local", help="the local PostgreSQL cluster of `make run`")
    local.add_argument("action", choices=["start", "stop", "status", "url"])
    local.set_defaults(func=cmd_local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except BrokenPipeError:
        # `trace-summaries status | head`: the reader left; stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (
        CommandError,
        ConfigError,
        summaries.NotInstalledError,
        options.OptionError,
    ) as error:
        print(f"{PROG}: {redact(str(error))}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"{PROG}: {redact(' '.join(str(error).split()))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
