"""The refresh interval: how often the job runs, as people write it and as pg_cron takes it.

An interval is written ``10s``, ``2min`` or ``1h`` (also ``10 seconds``,
``2 minutes``, ``120``: seconds). pg_cron runs a job on a cron schedule, so
an interval must divide its unit evenly: 1 to 59 seconds (pg_cron 1.5 and
later only), a number of minutes that divides an hour, or of hours that
divides a day. :attr:`Interval.cron` is its pg_cron schedule; the SQL that
schedules the job is rendered from it (:data:`cnpg_trace_summaries.sql.common.SCHEDULE`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cnpg_trace_summaries.contract import REFRESH_INTERVAL_SECONDS

_UNITS = {"s": 1, "min": 60, "h": 3600}
_SPELLINGS = {
    "": "s", "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "m": "min", "min": "min", "minute": "min", "minutes": "min",
    "h": "h", "hour": "h", "hours": "h",
}  # fmt: skip
_WRITTEN = re.compile(r"^(\d+)\s*([a-z]*)$")
MINUTES = tuple(m for m in range(1, 60) if 60 % m == 0)
HOURS = tuple(h for h in range(1, 24) if 24 % h == 0)
ALLOWED = (
    *range(1, 60),
    *(m * 60 for m in MINUTES),
    *(h * 3600 for h in HOURS),
)


@dataclass(frozen=True, order=True)
class Interval:
    seconds: int

    @property
    def text(self) -> str:
        """How the record and the options write it: 10s, 2min, 1h."""
        for unit in ("h", "min"):
            if self.seconds >= _UNITS[unit] and self.seconds % _UNITS[unit] == 0:
                return f"{self.seconds // _UNITS[unit]}{unit}"
        return f"{self.seconds}s"

    @property
    def words(self) -> str:
        """For people: every 10 seconds, every 2 minutes, every minute."""
        for unit, name in (("h", "hour"), ("min", "minute"), ("s", "second")):
            if self.seconds % _UNITS[unit] == 0:
                count = self.seconds // _UNITS[unit]
                return f"every {name}" if count == 1 else f"every {count} {name}s"
        raise AssertionError(self.seconds)

    @property
    def cron(self) -> str:
        """pg_cron's schedule for it: '10 seconds', '* * * * *', '*/2 * * * *', '0 */6 * * *'."""
        if self.seconds < 60:
            return f"{self.seconds} seconds"
        if self.seconds < 3600:
            minutes = self.seconds // 60
            return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
        hours = self.seconds // 3600
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"

    @property
    def in_seconds(self) -> bool:
        """Whether pg_cron needs second schedules (1.5 and later) for it."""
        return self.seconds < 60


DEFAULT = Interval(REFRESH_INTERVAL_SECONDS)


def of_schedule(schedule: str) -> Interval | None:
    """The interval whose pg_cron schedule is ``schedule`` (None for any other schedule)."""
    return next((every for every in map(Interval, ALLOWED) if every.cron == schedule), None)


def nearest(seconds: float) -> Interval:
    """The allowed interval closest to ``seconds`` (the shorter one on a tie)."""
    return Interval(min(ALLOWED, key=lambda allowed: (abs(allowed - seconds), allowed)))


def parse(raw: str) -> Interval:
    """An :class:`Interval` from how a person writes it; ValueError says what is allowed."""
    found = _WRITTEN.match(raw.strip().lower())
    unit = _SPELLINGS.get(found.group(2)) if found else None
    if unit is None:
        raise ValueError("a number of seconds, minutes or hours, like 10s, 2min or 1h")
    seconds = int(found.group(1)) * _UNITS[unit]
    if seconds not in ALLOWED:
        raise ValueError(
            "1 to 59 seconds, or minutes that divide an hour "
            f"({', '.join(map(str, MINUTES))}), or hours that divide a day; "
            f"the nearest is {nearest(seconds).text}"
        )
    return Interval(seconds)
