"""CPU time of the server's short-lived processes, read from /proc (the freshness benchmark).

pg_cron (background workers on) runs each job in a process of its own, ``postgres:
pg_cron worker``, that exits when the run ends; PostgreSQL keeps no CPU time per
backend. So a thread reads the postmaster's children (``/proc/<pid>/task/<pid>/children``)
every ``interval`` seconds and, for every pg_cron worker, parallel worker and
autovacuum worker among them (and every child too young to have its title yet),
the time it has spent on a CPU (``/proc/<pid>/schedstat``, nanoseconds). The last
reading of a process is its CPU time, less what it spent after that reading: at
most ``interval`` per process. A run's pid is in ``cron.job_run_details.job_pid``;
a parallel worker counts for its leader.

:func:`server_seconds` is the whole server's CPU time (the postmaster, its live
children, and those it has reaped), to read before and after a stretch of time.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

log = logging.getLogger(__name__)

TRACKED = ("pg_cron worker", "parallel worker for PID", "autovacuum worker")
_LEADER = re.compile(r"parallel worker for PID (\d+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:  # gone, or never there
        return None


def children(pid: int) -> list[int]:
    text = _read(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in text.split()] if text else []


def title(pid: int) -> str | None:
    """What ``ps`` shows for a server process: "postgres: pg_cron worker CALL"."""
    text = _read(f"/proc/{pid}/cmdline")
    return text.replace("\0", " ").strip() if text is not None else None


def _stat_fields(pid: int) -> list[str] | None:
    """proc(5)'s /proc/<pid>/stat after the command name: field 3 (state) is the first."""
    text = _read(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split() if text else None


def on_cpu_ns(pid: int) -> int | None:
    """Nanoseconds on a CPU (schedstat), else utime + stime in clock ticks (stat)."""
    text = _read(f"/proc/{pid}/schedstat")
    if text:
        return int(text.split()[0])
    fields = _stat_fields(pid)
    return int((int(fields[11]) + int(fields[12])) * 1e9 / CLOCK_TICKS) if fields else None


def server_seconds(postmaster: int) -> float:
    """CPU seconds of the whole server so far: the postmaster, its children alive and reaped."""
    fields = _stat_fields(postmaster)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc(5)
    own_and_reaped = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    alive = sum(on_cpu_ns(child) or 0 for child in children(postmaster)) / 1e9
    return own_and_reaped + alive


class ProcessCpu(threading.Thread):
    """Samples the CPU time of the server's pg_cron, parallel and autovacuum workers."""

    def __init__(self, postmaster: int, interval: float = 0.01):
        super().__init__(name="process-cpu", daemon=True)
        self.postmaster = postmaster
        self.interval = interval
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._ignored: set[int] = set()
        self.seconds: dict[int, float] = {}  # pid: CPU seconds at its last reading
        self.titles: dict[int, str] = {}
        self.readings = 0

    def run(self) -> None:
        try:
            for pid in children(self.postmaster):  # the processes alive already run on
                self._ignored.add(pid)
            while not self._halt.wait(self.interval):
                self._sample()
        except BaseException as error:  # reported by stop()
            self.error = error
            log.exception("the CPU sampler stopped")

    def _sample(self) -> None:
        self.readings += 1
        for pid in children(self.postmaster):
            if pid in self._ignored:
                continue
            name = title(pid)
            if name is None:
                continue
            if name.startswith("postgres:") and not any(kind in name for kind in TRACKED):
                self._ignored.add(pid)  # a client's backend, or another long-lived process
                continue
            cpu = on_cpu_ns(pid)
            if cpu is not None:
                self.seconds[pid] = cpu / 1e9
                if name.startswith("postgres:"):
                    self.titles[pid] = name

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        if self.error:
            raise RuntimeError(f"the CPU sampler failed: {self.error}") from self.error
        return {"interval_s": self.interval, "readings": self.readings}

    def of_pids(self, pids: set[int]) -> tuple[float, int]:
        """CPU seconds of these pids and of their parallel workers; how many pids were seen."""
        total = 0.0
        for pid, seconds in self.seconds.items():
            leader = _LEADER.search(self.titles.get(pid, ""))
            if pid in pids or (leader and int(leader.group(1)) in pids):
                total += seconds
        return total, len(pids & self.seconds.keys())

    def of_kind(self, kind: str) -> tuple[float, int]:
        """CPU seconds of the processes whose title holds ``kind``, and how many there were."""
        found = [s for pid, s in self.seconds.items() if kind in self.titles.get(pid, "")]
        return sum(found), len(found)
