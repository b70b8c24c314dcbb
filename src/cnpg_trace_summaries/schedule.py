"""``trace-summaries schedule --every INTERVAL``: change how often the job refreshes.

It checks that pg_cron can run the job that often (seconds need pg_cron 1.5
or later) and, in view mode, that a refresh of the current window takes less
than the interval (it runs one, and says how long it took); then records the
interval in the summaries' record and schedules the job again where pg_cron
lives. The same re-creates a job that has gone missing. Status, the install's
grace period and ``refresh --every`` follow the recorded interval.
"""

from __future__ import annotations

from cnpg_trace_summaries import interval as intervals
from cnpg_trace_summaries import modes, pgcron, summaries
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql.common import record
from cnpg_trace_summaries.sql.render import set_values


class ScheduleError(Exception):
    """The interval cannot be used; the message says why and what would do."""


def change(place: Place, every: intervals.Interval, cron_database: str = "") -> str:
    """Record ``every`` and schedule the job at it; the line to show. ``place`` is in autocommit."""
    mode = modes.require(place.conn, place.schema).mode
    location = pgcron.locate(place, cron_database)
    refused = pgcron.interval_refused(place, location, every)
    if refused:
        raise ScheduleError(refused)
    if not mode.can_drift:
        if every.in_seconds:
            raise ScheduleError(
                f"the view mode refreshes at most every minute (every {every.text} asks for "
                "more): it rescans the whole window each time; switch to the incremental mode "
                "first (`trace-summaries switch incremental`)"
            )
        measured = summaries.refresh(place)
        if measured.refreshed and measured.seconds > every.seconds:
            raise ScheduleError(
                f"a refresh of the view took {measured.seconds:.1f}s just now, longer than "
                f"{every.text}: it could never keep up; choose a longer interval, or switch to "
                "the incremental mode"
            )
    values = {"refresh_interval": every.text}
    with place.conn.transaction():
        place.conn.execute(set_values(values, "%({})s"), values)
        place.execute(record(mode.kind, mode.name))
    if location.database is None:
        return (
            f"otel_trace_summaries is now refreshed {every.words} by record, but no pg_cron "
            f"runs it ({location.how}): run `trace-summaries refresh --every {every.text}`"
        )
    try:
        return pgcron.schedule(place, location, cron_database)
    except pgcron.CronError as error:
        raise ScheduleError(
            f"recorded the interval {every.text}, but could not schedule the job: {error}"
        ) from None
