"""What a revision may use of this package: mechanics, never SQL.

A revision carries the SQL it runs, frozen in its file; this module gives it
the means to run that SQL: the options, values handed to its DO blocks,
where pg_cron lives and a connection there, and one way to fail. Released
revisions call these functions, so their behaviour never changes: add a
function, never change one (a test calls each the way the revisions do).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import context, op

from cnpg_trace_summaries import options, pgcron
from cnpg_trace_summaries.database import MigrationError
from cnpg_trace_summaries.interval import parse as parse_interval
from cnpg_trace_summaries.place import Place, pinned
from cnpg_trace_summaries.sql.render import set_values

__all__ = ["MigrationError", "log"]

# Logged like the server's NOTICEs (see env.py), so the person upgrading sees them.
log = logging.getLogger("cnpg_trace_summaries.notices")


def option(name: str) -> str:
    """The validated value of a -x option (or its environment variable)."""
    return options.from_alembic(name)


def offline() -> bool:
    """Whether alembic writes a script (--sql) instead of running against a database."""
    return context.is_offline_mode()


def values(**given: str) -> None:
    """Hand ``given`` to the DO blocks of this transaction (they read them with value())."""
    op.execute(sa.text(set_values(given)).bindparams(**given))


def autocommit(*statements: str) -> None:
    """Run ``statements`` outside the revision's transaction (each commits on its own)."""
    with op.get_context().autocommit_block():
        for statement in statements:
            op.execute(statement)


@contextlib.contextmanager
def place() -> Iterator[Place | None]:
    """The migration's connection, its path pinned for the block (None in --sql mode)."""
    if offline():
        yield None
        return
    with pinned(op.get_bind().connection.driver_connection) as found:
        yield found


def locate_cron() -> pgcron.Location | None:
    """Where pg_cron lives, for this migration (None in --sql mode)."""
    with place() as here:
        return None if here is None else pgcron.locate(here, option("cron_database"))


def elsewhere(location: pgcron.Location | None) -> bool:
    """Whether pg_cron lives in another database (so the job is scheduled from there, last)."""
    return pgcron.elsewhere(location)


def check_refresher(location: pgcron.Location | None) -> None:
    """Before anything runs: fail when the options ask for what pg_cron cannot do."""
    if location is None:
        return
    if option("require_refresh") == "yes" and location.database is None:
        raise MigrationError(
            "no pg_cron job can refresh otel_trace_summaries (require_refresh=yes): "
            f"{location.how}; nothing was changed"
        )
    with place() as here:
        refused = pgcron.interval_refused(
            here, location, parse_interval(option("refresh_interval"))
        )
    if refused:
        raise MigrationError(f"{refused}; nothing was changed")


def installing() -> bool:
    """Whether this run installs the summaries (rather than keeping an installed one)."""
    if offline():
        return True
    found = op.get_bind().exec_driver_sql(
        "SELECT pg_catalog.current_setting('cnpg_trace_summaries.installing', true)"
    )
    return found.scalar() == "yes"


def schedule_elsewhere(location: pgcron.Location, job_sql: str) -> str:
    """Schedule the job ``job_sql`` (a revision's frozen query) where pg_cron lives.

    Raises :class:`pgcron.CronError` with what an administrator must run.
    """
    with place() as here:
        return pgcron.schedule_elsewhere(here, location, pgcron.job(here, job_sql))


def unschedule_elsewhere(location: pgcron.Location) -> str | None:
    with place() as here:
        return pgcron.unschedule_elsewhere(here, location)


def cron_not_found_warning(location: pgcron.Location | None) -> str | None:
    return None if location is None else pgcron.not_found_warning(location)


CronError = pgcron.CronError
