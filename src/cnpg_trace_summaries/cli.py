"""``trace-summaries``: the console command.

    trace-summaries status [--json]                freshness; exit 2 when stale or failing
    trace-summaries refresh [--every [INTERVAL]] [--full]   a refresh now, or in a loop
    trace-summaries verify [--json]                compare with the definition; exit 2 if not
    trace-summaries switch view|incremental        switch the mode of an installed database
    trace-summaries schedule --every INTERVAL      change how often the job refreshes
    trace-summaries repair [--dry-run]             restore the job, records and grants
    trace-summaries list [--limit N] [--json]      newest summaries and the pg_cron job
    trace-summaries demo [--traces N]              load demo spans, refresh, list (development)
    trace-summaries local start|stop|status|url    the make-run cluster (development)

It prints for people; ``--json`` where a machine reads the output. Errors end
with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from cnpg_trace_summaries import (
    __version__,
    health,
    migrating,
    modes,
    options,
    output,
    pgcron,
    summaries,
)
from cnpg_trace_summaries import interval as intervals
from cnpg_trace_summaries import repair as repairing
from cnpg_trace_summaries import schedule as scheduling
from cnpg_trace_summaries import switch as switching
from cnpg_trace_summaries.database import (
    ConfigError,
    connection_failure,
    install_notice_logger,
    libpq_conninfo,
    redact,
    resolve_database_url,
    safe_url,
)
from cnpg_trace_summaries.place import Place, place
from cnpg_trace_summaries.progress import progress_bar
from cnpg_trace_summaries.sql.incremental import ROWS_PER_REBUILD_RANGE, SPANS_PER_REBUILD_SLICE

PROG = "trace-summaries"
APPLICATION_NAME = "cnpg-trace-summaries"


class CommandError(Exception):
    """Ends the command with this message and exit status 1."""


def connect(*, application: str = APPLICATION_NAME, **kwargs: Any) -> psycopg.Connection:
    url = resolve_database_url()
    try:
        return psycopg.connect(libpq_conninfo(url), application_name=application, **kwargs)
    except psycopg.OperationalError as error:
        raise CommandError(connection_failure(safe_url(url), error)) from None


def option(name: str) -> str:
    """An option's value from the environment (the console command has no -x)."""
    return options.value(name, {})


# -- local, demo: development --------------------------------------------------------
def cmd_local(args: argparse.Namespace) -> int:
    from cnpg_trace_summaries.dev.localdb import LocalCluster, LocalClusterError

    cluster = LocalCluster.from_checkout()
    try:
        if args.action == "start":
            cluster.start()
            print(
                f"local PostgreSQL is running on 127.0.0.1:{cluster.state().port} "
                "(its URL, with the password: trace-summaries local url)"
            )
        elif args.action == "stop":
            print(
                "local PostgreSQL stopped" if cluster.stop() else "local PostgreSQL was not running"
            )
        elif args.action == "status":
            running = cluster.is_running()
            print(f"local PostgreSQL is {'running' if running else 'stopped'}")
            return 0 if running else 3
        elif args.action == "url":
            print(cluster.libpq_url())
    except LocalClusterError as error:
        raise CommandError(str(error)) from None
    return 0


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
        here = place(conn)
        modes.require(conn, here.schema)
        conn.rollback()
        demo.load_spans(here, iter(spans), total=len(spans), progress=progress_bar("loading spans"))
        conn.commit()
        conn.autocommit = True
        sys.stderr.write(output.outcome(summaries.refresh(here)) + "\n\n")
        print_listing(here, limit=10, as_json=False)
    return 0


# -- list -------------------------------------------------------------------------------
def print_listing(here: Place, *, limit: int, as_json: bool) -> None:
    mode = modes.require(here.conn, here.schema).mode.name
    rows = summaries.newest(here, limit)
    cron = pgcron.find_job(here, pgcron.locate(here, option("cron_database")))
    total = summaries.count(here)
    if as_json:
        payload = {"mode": mode, "traces": total, "newest": rows, "refresh_job": cron.job}
        print(output.to_json(payload))
    else:
        print(output.listing(mode, total, rows, cron))


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    with connect(autocommit=True) as conn:
        print_listing(place(conn), limit=args.limit, as_json=args.json)
    return 0


# -- refresh ----------------------------------------------------------------------------
def every_seconds(raw: str) -> float:
    """--every: seconds (0.5), or an interval (10s, 2min)."""
    try:
        seconds = float(raw)
    except ValueError:
        try:
            return intervals.parse(raw).seconds
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"must be {error}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return seconds


RECORDED = "recorded"


def positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def cmd_refresh(args: argparse.Namespace) -> int:
    if args.every is None:
        with connect(autocommit=True) as conn:
            result = summaries.refresh(place(conn), full=args.full)
        print(output.to_json(result) if args.json else output.outcome(result))
        return 0 if result.refreshed else 3
    every = args.every
    if every == RECORDED:
        with connect(autocommit=True) as conn:
            here = place(conn)
            recorded = modes.require(conn, here.schema).record.refresh_interval
        every = intervals.parse(recorded).seconds
    return refresh_forever(every, full=args.full)


def refresh_forever(every: float, *, full: bool = False) -> int:
    """Refresh every ``every`` seconds until Ctrl-C or SIGTERM; failures are retried next tick."""
    # Both stop it, also where it was started with SIGINT ignored (a script's background job,
    # whose SIG_IGN Python keeps): otherwise Ctrl-C, as the first line says, would do nothing.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    print(f"refreshing otel_trace_summaries every {every:g}s (Ctrl-C stops)", flush=True)
    conn: psycopg.Connection | None = None
    here: Place | None = None
    next_tick = time.monotonic()
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = connect(autocommit=True)
                    here = place(conn)
                print(output.outcome(summaries.refresh(here, full=full)), flush=True)
                full = False  # once is enough
            except (psycopg.Error, CommandError, ConfigError, LookupError) as error:
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


# -- status, verify ------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    try:
        with connect(autocommit=True) as conn:
            report = health.health(place(conn), option("cron_database"))
    except (CommandError, ConfigError, LookupError, psycopg.Error) as error:
        if args.json:  # a monitoring check that reads JSON gets JSON, then exit status 1
            problem = redact(" ".join(str(error).split()))
            print(output.to_json({"healthy": False, "problems": [problem]}))
        raise
    print(
        output.to_json(output.health_payload(report)) if args.json else output.health_lines(report)
    )
    return 0 if report.healthy else 2


def cmd_verify(args: argparse.Namespace) -> int:
    with connect(autocommit=True) as conn:
        result = summaries.verify(place(conn))
    print(output.to_json(result) if args.json else output.verification(result))
    return 0 if result.exact else 2


# -- switch, schedule, repair ------------------------------------------------------------------
def cmd_switch(args: argparse.Namespace) -> int:
    try:
        lock_timeout = options.duration(args.lock_timeout or option("lock_timeout"))
    except ValueError as error:
        raise CommandError(f"--lock-timeout must be {error}") from None
    url = resolve_database_url()
    with connect(application=f"{migrating.APPLICATION_NAME}: switch") as conn:
        try:
            migrating.configure_session(conn, lock_timeout)
            schema = migrating.current_schema(conn)
            with (
                migrating.migration_lock(conn, schema, wait=option("migration_lock_wait")),
                install_notice_logger(conn),
            ):
                report = switching.switch(
                    place(conn),
                    args.mode,
                    cron_database=option("cron_database"),
                    rows_per_range=args.rows_per_range,
                    spans_per_slice=args.spans_per_slice,
                )
        except (switching.SwitchError, migrating.MigrationLockBusyError) as error:
            raise CommandError(str(error)) from None
    if args.json:
        print(output.to_json(report))
        return 0
    if not report.switched:
        print(f"otel_trace_summaries is already in {report.target} mode: nothing to switch")
        if report.removed:
            print(f"removed what an interrupted switch had left: {report.removed}")
        return 0
    built = ""
    if report.build:
        built = (
            f" ({output.plural(report.build['slices'], 'slice')} of the window, "
            f"{output.plural(report.build['ranges'], 'range')} of traces, each committed)"
        )
    print(
        f"switched otel_trace_summaries from {report.source} to {report.target} mode on "
        f"{safe_url(url)}: built beside the old one in {report.build_seconds:.1f}s{built}, "
        f"swapped in {report.swap_seconds * 1000:.0f} ms"
    )
    if report.job:
        print(report.job)
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    try:
        every = intervals.parse(args.every)
    except ValueError as error:
        raise CommandError(f"--every must be {error}") from None
    with connect(autocommit=True) as conn, install_notice_logger(conn):
        try:
            line = scheduling.change(place(conn), every, option("cron_database"))
        except (scheduling.ScheduleError, pgcron.CronError) as error:
            raise CommandError(str(error)) from None
    print(line)
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    with connect(autocommit=True) as conn:
        migrating.configure_session(conn, option("lock_timeout"))
        conn.autocommit = True
        result = repairing.repair(
            place(conn),
            cron_database=option("cron_database"),
            reader_role=args.reader_role or option("reader_role"),
            dry_run=args.dry_run,
        )
    if args.json:
        print(output.to_json(result))
        return 0 if not result.cannot else 2
    verb = "would change" if args.dry_run else "changed"
    if not result.changes and not result.cannot:
        print("otel_trace_summaries: nothing to repair")
    for change in result.changes:
        print(f"{verb}: {change}")
    for cannot in result.cannot:
        print(f"cannot: {cannot}")
    for note in result.notes:
        print(f"note: {note}")
    return 0 if not result.cannot else 2


# -- the command line ------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """Usage errors end like every other error: one line, exit status 1 (2 means unhealthy)."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: {message} (see {PROG} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Trace summaries for an OpenTelemetry span store on PostgreSQL. "
        "Connects to DATABASE_URL (in a checkout, to the local cluster of `make run` without it).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(name: str, func, **kwargs) -> argparse.ArgumentParser:
        found = sub.add_parser(name, **kwargs)
        found.set_defaults(func=func)
        return found

    def json_flag(found: argparse.ArgumentParser) -> None:
        found.add_argument("--json", action="store_true", help="machine-readable output")

    status = command(
        "status",
        cmd_status,
        help="is it fresh? exit 0 when healthy, 2 when stale or failing",
        description="Reads the metrics function and pg_cron's record (estimates and index "
        "lookups: it never scans a table). Stale means older than two refresh intervals.",
    )
    json_flag(status)

    refresh = command(
        "refresh",
        cmd_refresh,
        help="refresh now (either mode), or in a loop",
        description="View mode: REFRESH MATERIALIZED VIEW CONCURRENTLY. Incremental mode: "
        "recompute what changed. Two refreshers never overlap (advisory lock): a refresh that "
        "finds another running is skipped (exit status 3).",
    )
    refresh.add_argument(
        "--every",
        nargs="?",
        const=RECORDED,
        type=lambda raw: raw if raw == RECORDED else every_seconds(raw),
        metavar="INTERVAL",
        help="keep refreshing, every INTERVAL (10s, 2min, or seconds); without a value, at the "
        "recorded interval (for deployments without pg_cron)",
    )
    refresh.add_argument(
        "--full", action="store_true", help="incremental mode: rebuild everything (once)"
    )
    json_flag(refresh)

    verify = command(
        "verify",
        cmd_verify,
        help="compare the summaries with their definition on the live database (exit 2 if not)",
        description="Incremental mode: reads the whole window and the whole table at one "
        "snapshot (as long as a full rebuild's read); run it when you suspect drift.",
    )
    json_flag(verify)

    switch = command(
        "switch",
        cmd_switch,
        help="switch an installed database between view and incremental mode",
        description="Builds the new relation beside the old one, then swaps them in one "
        "short transaction; readers keep reading throughout.",
    )
    switch.add_argument("mode", choices=list(modes.MODES))
    for flag, unit, default in (
        ("--rows-per-range", "summary rows", ROWS_PER_REBUILD_RANGE),
        ("--spans-per-slice", "spans", SPANS_PER_REBUILD_SLICE),
    ):
        switch.add_argument(
            flag,
            type=positive,
            metavar="N",
            help=f"to incremental: the {unit} each transaction of the build (and of every later "
            f"full rebuild) handles ({default:,})",
        )
    json_flag(switch)
    switch.add_argument(
        "--lock-timeout",
        help="how long the swap may wait for its locks (default: the migrations' lock_timeout, "
        f"{options.OPTIONS['lock_timeout'].env} or {options.OPTIONS['lock_timeout'].default})",
    )

    schedule = command(
        "schedule",
        cmd_schedule,
        help="change how often the job refreshes (or schedule a missing job again)",
        description="Seconds need pg_cron 1.5 or later and the incremental mode; the view mode "
        "runs one refresh first and refuses an interval shorter than it took.",
    )
    schedule.add_argument("--every", required=True, metavar="INTERVAL", help="10s, 2min, 1h")

    repair = command(
        "repair",
        cmd_repair,
        help="put an installed database right: the job, the record, the state and version "
        "rows, the grants (after an import, a restore, a lost job)",
    )
    repair.add_argument("--dry-run", action="store_true", help="say what it would change")
    repair.add_argument(
        "--reader-role", help="a role to grant SELECT (default: TRACE_SUMMARIES_READER_ROLE)"
    )
    json_flag(repair)

    listing = command(
        "list",
        cmd_list,
        help="the newest trace summaries and the pg_cron job",
        description="The newest rows are one index scan; the count scans the summaries.",
    )
    listing.add_argument("--limit", type=int, default=10, help="rows to show (10)")
    json_flag(listing)

    demo = command("demo", cmd_demo, help="load demo spans, refresh, list (development)")
    demo.add_argument("--traces", type=int, default=5_000, help="traces to load (5000)")
    demo.add_argument("--seed", type=int, help="random seed (random by default)")

    local = command("local", cmd_local, help="the local PostgreSQL cluster of `make run`")
    local.add_argument("action", choices=["start", "stop", "status", "url"])
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
    except (CommandError, ConfigError, LookupError, options.OptionError) as error:
        print(f"{PROG}: {redact(str(error))}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"{PROG}: {redact(' '.join(str(error).split()))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
