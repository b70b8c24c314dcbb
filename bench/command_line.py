"""The command line of ``python -m bench``: its options, whose defaults the README's list of runs
compares with, and where the checkout is.

Apart from __main__.py, so that readme.py reads the defaults without importing the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.workload import FRESHNESS_CONFIGS, PROBE_SECONDS, RATE, RATES, SAMPLE_EVERY

ROOT = Path(__file__).resolve().parents[1]

DESCRIPTION = (
    "``python -m bench`` (``make bench``): listing speed, refresh cost, capacity, both modes."
)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench``; its defaults are the README's too."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    parser.add_argument(
        "--traces", type=int, default=100_000, help="traces to generate (100,000 = about 1M spans)"
    )
    parser.add_argument("--listing-runs", type=int, default=1_000)
    parser.add_argument("--live-runs", type=int, default=200)
    parser.add_argument(
        "--live-budget",
        type=float,
        default=900.0,
        help="seconds the live listing queries may take in all, per query",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternated refresh rounds")
    parser.add_argument("--cycles", type=int, default=30, help="the view's refresh cycles")
    parser.add_argument(
        "--stage-cycles",
        type=int,
        default=3,
        help="incremental steady-state cycles at N/4 and N/2 (the median is the chart's point)",
    )
    parser.add_argument(
        "--incremental-cycles", type=int, default=20, help="incremental steady-state cycles at N"
    )
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",") if r],
        default=list(RATES),
        help="one more verified incremental cycle at each of these spans/s "
        f"({','.join(str(rate) for rate in RATES)}), "
        "where it replaces at most a quarter of the window",
    )
    parser.add_argument("--ingest-rounds", type=int, default=30, help="trigger on/off rounds")
    parser.add_argument(
        "--skip-live-listing",
        action="store_true",
        help="do not time the listing queries computed live (slow at large sizes)",
    )
    parser.add_argument(
        "--hypertable",
        action="store_true",
        help="otel_traces a TimescaleDB hypertable (chunks of a day), compressed but its last day",
    )
    parser.add_argument(
        "--pg-major", type=int, default=None, help="PostgreSQL major (default: newest with pg_cron)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument(
        "--rewrite-report",
        action="store_true",
        help="run nothing: rewrite every result's .md, refresh.png and README.md from the JSON",
    )
    return parser


FRESHNESS_DESCRIPTION = (
    "``python -m bench freshness``: how soon a new trace is listed, each mode and interval "
    "refreshed by pg_cron under a steady ingest."
)


def freshness_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench freshness``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench freshness", description=FRESHNESS_DESCRIPTION
    )
    parser.add_argument(
        "--traces",
        type=int,
        default=1_000_000,
        help="traces loaded before (1,000,000 = about 10M spans in the window)",
    )
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="minutes of steady ingest per configuration"
    )
    parser.add_argument(
        "--configs",
        default=FRESHNESS_CONFIGS,
        help=f"MODE:INTERVAL, comma-separated, measured in turn (default {FRESHNESS_CONFIGS})",
    )
    parser.add_argument("--rate", type=int, default=RATE, help="spans per second written")
    parser.add_argument(
        "--sample-every", type=int, default=SAMPLE_EVERY, help="one trace in N is timed"
    )
    parser.add_argument(
        "--probe-seconds",
        type=float,
        default=PROBE_SECONDS,
        help="how often the probe looks for the pending sampled traces",
    )
    parser.add_argument(
        "--cpu-sample-ms",
        type=float,
        default=10.0,
        help="how often the CPU time of pg_cron's run processes is read",
    )
    parser.add_argument(
        "--pg-major", type=int, default=None, help="PostgreSQL major (default: newest with pg_cron)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    return parser
