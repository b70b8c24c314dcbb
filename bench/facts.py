"""What a run records about itself, and the commands it runs the way an operator does.

* :func:`server_facts`: the server's settings and the machine;
* :func:`code_facts`: which code was measured;
* :func:`alembic`: the ``alembic`` command line, against a database URL, timed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time

import psycopg

from bench.command_line import ROOT


def alembic(url: str, *args: str) -> float:
    """``alembic -c alembic.ini ARGS`` with ``DATABASE_URL=url``: seconds; a failure says why."""
    env = dict(os.environ, DATABASE_URL=url)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"alembic {' '.join(args)} failed:\n{tail}")
    return time.perf_counter() - started


def server_facts(conn: psycopg.Connection) -> dict:
    names = (
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_parallel_workers_per_gather",
        "jit",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "max_wal_size",
        "checkpoint_timeout",
    )
    facts = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    facts |= {
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "bench_niceness": os.nice(0),
        "load_average_at_start": os.getloadavg(),
        "machine": platform.machine(),
    }
    return facts


def code_facts() -> dict:
    """Which code was measured: the commit, local changes, and the incremental mode's SQL."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    package = ROOT / "src" / "cnpg_trace_summaries"
    everything = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *(ROOT / "alembic").rglob("*.py")]):
        everything.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--", "src", "alembic", "bench")),
        "incremental_mode_sha256": hashlib.sha256(
            (package / INCREMENTAL_SQL).read_bytes()
        ).hexdigest()[:16],
        "incremental_mode_file": INCREMENTAL_SQL,
        "src_and_alembic_sha256": everything.hexdigest()[:16],
    }


# The incremental mode's SQL, whose hash each result records.
INCREMENTAL_SQL = "sql/incremental.py"
