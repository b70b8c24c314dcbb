"""``python -m bench freshness``: how soon a new trace is listed, with pg_cron really refreshing.

One run, on one throwaway cluster (bench/cluster.py: the newest PostgreSQL with
pg_cron, 18 with pg_cron 1.6.7 here, which takes schedules in seconds), and the same data:

1. ``alembic upgrade 00000000000001`` and ``--traces`` loaded traces (1,000,000 by
   default: about 10M spans in the 7-day window), bench/generate.py's loader;
2. for each configuration (``--configs``; by default incremental every 10s,
   incremental every 2min, the view every 2min), in turn:

   * ``alembic -x summaries=MODE -x refresh_interval=INTERVAL upgrade head``: the
     summaries and their pg_cron job, in the app database, which is pg_cron's
     ``cron.database_name`` (the job is left to run: nothing here refreshes);
   * for ``--minutes``, a collector writes ``--rate`` spans/s (bench/collector.py)
     and a probe times how soon each sampled trace is listed (bench/probe.py); then
     the sampled traces still pending are waited for (the collector goes on) up to
     two intervals and a minute more;
   * meanwhile: the CPU time of every pg_cron run's process (bench/cpu.py), and every
     30 s the size and dead tuples of the summaries and the dirty-key table;
   * then pg_cron's record of the runs (``cron.job_run_details``); the job is
     unscheduled, ``alembic downgrade -1`` removes the summaries, and the spans the
     collector wrote are deleted, so every configuration starts from the same data;

3. writes bench/results/freshness-<spans>.json and .md (bench/freshness_report.py)
   and rewrites the chart and README.md (bench/output.py).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from bench import cluster as clusters
from bench import cpu, freshness_report, generate, output
from bench.collector import Collector
from bench.command_line import ROOT, freshness_parser
from bench.facts import alembic, code_facts, server_facts
from bench.incremental import unschedule
from bench.measure import percentile
from bench.probe import ListingProbe
from bench.report import duration
from bench.workload import LATE_TRACE_EVERY
from cnpg_trace_summaries import interval as intervals
from cnpg_trace_summaries.contract import DIRTY_TABLE, MODES, SUMMARIES, TRACES_TABLE
from cnpg_trace_summaries.progress import progress_bar
from cnpg_trace_summaries.sql import cron as cron_sql

log = logging.getLogger(__name__)

SERIES_SECONDS = 30  # how often the tables' sizes are read during a configuration

JOB_SQL = (
    "SELECT jobid, schedule, command FROM cron.job WHERE jobname LIKE 'otel_trace_summaries:%'"
)
RUNS_SQL = """
SELECT job_pid, status, return_message,
       extract(epoch FROM start_time), extract(epoch FROM end_time)
FROM cron.job_run_details
WHERE jobid = %s AND start_time >= to_timestamp(%s)
ORDER BY start_time
"""
RUNNING_SQL = "SELECT count(*) FROM cron.job_run_details WHERE jobid = %s AND status = 'running'"
TABLE_SQL = """
SELECT pg_total_relation_size(relid), n_live_tup, n_dead_tup, autovacuum_count, n_tup_ins,
       n_tup_upd, n_tup_del
FROM pg_stat_user_tables WHERE relid = to_regclass(%s)
"""
TABLE_FIELDS = ("total_bytes", "live_rows", "dead_rows", "autovacuums", "inserted", "updated",
                "deleted")  # fmt: skip


@dataclass(frozen=True)
class Config:
    """A mode and the interval its pg_cron job refreshes at."""

    mode: str
    interval: intervals.Interval

    @classmethod
    def parse(cls, text: str) -> Config:
        mode, _, every = text.partition(":")
        if mode not in MODES or not every:
            raise ValueError(f"{text!r}: MODE:INTERVAL, MODE one of {', '.join(MODES)}")
        return cls(mode, intervals.parse(every))

    @property
    def name(self) -> str:
        return f"{self.mode}:{self.interval.text}"


def configs(text: str) -> list[Config]:
    """``--configs``: comma-separated MODE:INTERVAL (incremental:10s,view:2min)."""
    return [Config.parse(part.strip()) for part in text.split(",") if part.strip()]


# -- what the database says -----------------------------------------------------------------
def tables(conn: psycopg.Connection) -> dict:
    """Size and tuples of the summaries and the dirty-key table (None where it does not exist)."""
    facts: dict = {"at": time.time()}
    for name in (SUMMARIES, DIRTY_TABLE):
        row = conn.execute(TABLE_SQL, (name,)).fetchone()
        facts[name] = dict(zip(TABLE_FIELDS, row, strict=True)) if row else None
    return facts


def job(conn: psycopg.Connection) -> tuple[int, str, str]:
    found = conn.execute(JOB_SQL).fetchall()
    if len(found) != 1:
        raise RuntimeError(f"expected one pg_cron job of the summaries, found {found}")
    return found[0]


def runs_since(conn: psycopg.Connection, jobid: int, since: float) -> list[dict]:
    return [
        {"pid": pid, "status": status, "message": message, "start": float(start),
         "end": float(end) if end is not None else None}
        for pid, status, message, start, end in conn.execute(RUNS_SQL, (jobid, since))
    ]  # fmt: skip


def wait_for_runs(conn: psycopg.Connection, jobid: int, timeout: float) -> bool:
    """Wait until no run of the job is running; False when one still is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while conn.execute(RUNNING_SQL, (jobid,)).fetchone()[0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


# -- the figures ------------------------------------------------------------------------------
def distribution(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": min(values),
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def missed_ticks(starts: list[float], every: float) -> int:
    """Ticks of the schedule with no run: from the gaps between runs' starts."""
    return sum(max(0, round((b - a) / every) - 1) for a, b in itertools.pairwise(starts))


def by_pg_cron(listed: list[dict], runs: list[dict]) -> list[float]:
    """Each listed trace's time-to-list as pg_cron's record gives it: from the commit to the
    end of the first successful run that started after it (the probe's figure, less its
    polling)."""
    done = sorted((r["start"], r["end"]) for r in runs if r["status"] == "succeeded" and r["end"])
    found = []
    for sample in listed:
        ends = [end for start, end in done if start >= sample["committed_at"]]
        if ends:
            found.append(ends[0] - sample["committed_at"])
    return found


def run_record(run: dict) -> dict:
    """A pg_cron run as the result file keeps it: when, how long, how it ended."""
    return {
        "start": datetime.fromtimestamp(run["start"], UTC).isoformat(timespec="milliseconds"),
        "seconds": round(run["end"] - run["start"], 4) if run["end"] else None,
        "status": run["status"],
    }


def run_figures(runs: list[dict], every: float, wall: float, sampler: cpu.ProcessCpu) -> dict:
    """pg_cron's runs in a stretch of ``wall`` seconds: durations, outcomes, CPU."""
    finished = [r for r in runs if r["end"] is not None]
    durations = [r["end"] - r["start"] for r in finished]
    job_cpu, seen = sampler.of_pids({r["pid"] for r in runs if r["pid"]})
    return {
        "started": len(runs),
        "succeeded": sum(r["status"] == "succeeded" for r in runs),
        "failed": sum(r["status"] == "failed" for r in runs),
        "failures": sorted({r["message"] for r in runs if r["status"] == "failed"}),
        "still_running": len(runs) - len(finished),
        "expected_ticks": int(wall // every),
        "missed_ticks": missed_ticks([r["start"] for r in runs], every),
        "duration_s": distribution(durations),
        "duration_sum_s": sum(durations),
        "busy_share": sum(durations) / wall,
        "cpu_s": job_cpu,
        "cpu_share": job_cpu / wall,
        "cpu_runs_seen": seen,
    }


# -- one configuration -----------------------------------------------------------------------
@dataclass
class Stretch:
    """What happened while the collector wrote: the threads' reports and the wall clock."""

    started: float
    window_end: float
    ended: float
    written: dict
    seen: dict
    sampler: cpu.ProcessCpu
    server_cpu_s: float
    series: list[dict]

    @property
    def wall(self) -> float:
        return self.ended - self.started


def install(url: str, conn: psycopg.Connection, config: Config) -> dict:
    """``alembic upgrade head`` in ``config``'s mode and interval; the job it scheduled."""
    log.info("%s: alembic upgrade head", config.name)
    options = [f"summaries={config.mode}", f"refresh_interval={config.interval.text}"]
    took = alembic(url, *(f"-x{option}" for option in options), "upgrade", "head")
    jobid, schedule, command = job(conn)
    spans = generate.spans_in_window(conn)
    log.info("%s: installed in %.1fs, pg_cron job %s '%s': %s (%s spans in the window)",
             config.name, took, jobid, schedule, command, f"{spans:,}")  # fmt: skip
    return {"install_s": took, "jobid": jobid, "schedule": schedule, "command": command,
            "spans_in_window": spans}  # fmt: skip


def under_ingest(bench: clusters.BenchCluster, conn: psycopg.Connection, config: Config,
                 args: argparse.Namespace) -> Stretch:  # fmt: skip
    """``--minutes`` of steady ingest, probed and sampled; then the wait for the last traces."""
    probe = ListingProbe(bench.url, args.probe_seconds)
    sampler = cpu.ProcessCpu(bench.postmaster_pid, args.cpu_sample_ms / 1000)
    collector = Collector(bench.url, args.rate, probe.add, sample_every=args.sample_every,
                          tag=f"fresh.{config.name}.{time.time()}")  # fmt: skip
    server_cpu = cpu.server_seconds(bench.postmaster_pid)
    threads = (sampler, probe, collector)
    for thread in threads:
        thread.start()
    started = time.time()
    series = []
    window = args.minutes * 60
    drain_limit = 2 * config.interval.seconds + 60
    try:
        while (elapsed := time.time() - started) < window:
            time.sleep(min(SERIES_SECONDS, window - elapsed))
            series.append(tables(conn))
            if stopped := [t for t in threads if not t.is_alive()]:
                raise RuntimeError(f"the {stopped[0].name} thread stopped: {stopped[0].error}")
            log.info("%s: %.1f/%g min, %s spans written, %d traces sampled, %d listed, "
                     "%d pending", config.name, (time.time() - started) / 60, args.minutes,
                     f"{collector.counts['spans']:,}", collector.counts["sampled"],
                     len(probe.listed), probe.pending)  # fmt: skip
        collector.sampling = False
        window_end = time.time()
        log.info("%s: waiting (up to %ds) for the %d sampled traces not listed yet",
                 config.name, drain_limit, probe.pending)  # fmt: skip
        while probe.pending and time.time() - window_end < drain_limit:
            time.sleep(0.5)
    finally:
        written, seen, _ = collector.stop(), probe.stop(), sampler.stop()
    ended = time.time()
    server_cpu = cpu.server_seconds(bench.postmaster_pid) - server_cpu
    return Stretch(started, window_end, ended, written, seen, sampler, server_cpu, series)


def figures(config: Config, installed: dict, stretch: Stretch, runs: list[dict]) -> dict:
    """One configuration's result: time-to-list, pg_cron's runs, CPU, the tables."""
    listed, wall = stretch.seen["listed"], stretch.wall
    to_list = [s["listed_at"] - s["committed_at"] for s in listed]
    return {
        "mode": config.mode,
        "interval": config.interval.text,
        "interval_s": config.interval.seconds,
        **{key: value for key, value in installed.items() if key != "jobid"},
        "minutes": (stretch.window_end - stretch.started) / 60,
        "wall_s": wall,
        "drain_s": stretch.ended - stretch.window_end,
        "collector": stretch.written,
        "probe": {k: v for k, v in stretch.seen.items() if k not in ("listed", "unlisted")},
        "sampled": stretch.written["sampled"],
        "listed": len(listed),
        "unlisted": len(stretch.seen["unlisted"]),
        "time_to_list_s": distribution(to_list),
        "time_to_list_by_pg_cron_s": distribution(by_pg_cron(listed, runs)),
        "time_to_list_values_s": [round(value, 3) for value in to_list],
        "runs": run_figures(runs, config.interval.seconds, wall, stretch.sampler),
        "run_list": [run_record(r) for r in runs],
        "cpu_sampler": {
            "interval_s": stretch.sampler.interval,
            "readings": stretch.sampler.readings,
        },
        "autovacuum_cpu_s": stretch.sampler.of_kind("autovacuum worker")[0],
        "server_cpu_s": stretch.server_cpu_s,
        "server_cpu_share": stretch.server_cpu_s / wall,
        "tables_series": stretch.series,
    }


def measure(bench: clusters.BenchCluster, conn: psycopg.Connection, config: Config,
            args: argparse.Namespace) -> dict:  # fmt: skip
    """Install ``config``, measure it under a steady ingest, remove it again."""
    installed = install(bench.url, conn, config)
    before = tables(conn)
    stretch = under_ingest(bench, conn, config, args)
    unschedule(conn)
    if not wait_for_runs(conn, installed["jobid"], 2 * config.interval.seconds + 120):
        log.warning("%s: a pg_cron run is still running", config.name)
    time.sleep(1)  # the statistics of the last run's process are flushed as it exits
    after = tables(conn)
    runs = [r for r in runs_since(conn, installed["jobid"], stretch.started)
            if r["start"] < stretch.ended]  # fmt: skip
    result = {**figures(config, installed, stretch, runs), "tables_before": before,
              "tables_after": after}  # fmt: skip
    ttl, cron = result["time_to_list_s"], result["runs"]
    log.info("%s: time-to-list p50 %s p99 %s max %s over %d traces (%d never listed); %d runs, "
             "median %s, job CPU %.2f%% of a core", config.name,
             *(duration(ttl[k]) if k in ttl else "-" for k in ("p50", "p99", "max")),
             result["listed"], result["unlisted"], cron["started"],
             duration(cron["duration_s"]["p50"]) if cron["started"] else "-",
             100 * cron["cpu_share"])  # fmt: skip

    log.info("%s: alembic downgrade -1, and the spans written deleted", config.name)
    alembic(bench.url, "downgrade", "-1")
    result["spans_deleted_after"] = conn.execute(
        f'DELETE FROM {TRACES_TABLE} WHERE "timestamp" >= to_timestamp(%s)',
        (stretch.started - 1,),
    ).rowcount
    conn.execute(f"VACUUM ANALYZE {TRACES_TABLE}")
    return result


# -- the run ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    chosen = configs(args.configs)
    bench = clusters.start(major=args.pg_major)
    if any(c.interval.in_seconds for c in chosen) and not cron_sql.takes_seconds(
        bench.extension("pg_cron") or "0"
    ):
        bench.remove()
        raise SystemExit(
            f"pg_cron {bench.extension('pg_cron')} of PostgreSQL {bench.server.major} schedules "
            "whole minutes only; intervals in seconds need pg_cron 1.5 or later "
            "(make extensions builds 1.6.7 for PostgreSQL 18)"
        )
    results: dict = {
        "kind": "freshness",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "traces": args.traces,
        "code": code_facts(),
        "options": {key: str(value) for key, value in vars(args).items()},
        "pg_cron": bench.extension("pg_cron"),
        "late_trace_every": LATE_TRACE_EVERY,
        "cpu_method": (
            "the CPU time of each pg_cron run's process (cron.job_run_details.job_pid) and its "
            f"parallel workers, read from /proc/<pid>/schedstat every {args.cpu_sample_ms:g} ms "
            "while it lives; at most that much of each run's end is missed"
        ),
        "configs": [],
    }
    try:
        with psycopg.connect(bench.url, autocommit=True) as conn:
            results["server"] = server_facts(conn)
            alembic(bench.url, "upgrade", "00000000000001")
            log.info("loading %s traces", f"{args.traces:,}")
            with psycopg.connect(bench.url) as load:
                generate.load_traces(load, 1, args.traces, args.traces,
                                     progress=progress_bar("  traces"))  # fmt: skip
            conn.execute(f"VACUUM ANALYZE {TRACES_TABLE}")
            results["spans_in_window"] = generate.spans_in_window(conn)
            results["spans_total"] = conn.execute(
                f"SELECT count(*) FROM {TRACES_TABLE}"
            ).fetchone()[0]
            for config in chosen:
                results["configs"].append(measure(bench, conn, config, args))
    finally:
        if args.keep:
            log.info("cluster kept running: %s", bench.url)
        else:
            bench.remove()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["load_average_at_end"] = os.getloadavg()
    results["code_at_end"] = code_facts()
    return results


def main(argv: list[str]) -> int:
    """``python -m bench freshness ...``: run, write the results, print where they went."""
    command_line = freshness_parser()
    args = command_line.parse_args(argv)
    try:
        chosen = configs(args.configs)
    except ValueError as error:
        command_line.error(f"--configs: {error}")
    if any(c.mode == "view" and c.interval.in_seconds for c in chosen):
        command_line.error("--configs: the view mode refreshes at most every minute")
    if min(args.traces, args.rate, args.sample_every) < 1 or args.minutes <= 0:
        command_line.error("--traces, --rate, --sample-every and --minutes must be positive")
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = output.write(results, args.out)
    print(freshness_report.headline(results))
    for path in paths:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0
