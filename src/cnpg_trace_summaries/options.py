"""The migrations' options: ``-x NAME=VALUE`` on the alembic command line, or the environment.

``-x`` wins over the environment, the environment over the default. Every
value is validated here, once, and a bad one ends the command with one line.
The README's option table is this module's :data:`OPTIONS`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cnpg_trace_summaries import interval as intervals
from cnpg_trace_summaries.contract import MODES

_DURATION = re.compile(r"^(\d+)\s*(us|ms|s|min|h|d)?$")
_MILLISECONDS = {
    "us": 0.001, "ms": 1, None: 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
}  # fmt: skip
# PostgreSQL keeps a timeout in an int of milliseconds; 0 means no timeout at all.
_LONGEST_MS = 2**31 - 1


class OptionError(Exception):
    """An option has a value it cannot take; the message says which and what it takes."""


def milliseconds(raw: str) -> float:
    """A PostgreSQL duration (a number with an optional unit; none: milliseconds) in ms."""
    found = _DURATION.match(raw.strip())
    if not found:
        raise ValueError("a number with an optional unit (us, ms, s, min, h, d), like 5s")
    return int(found.group(1)) * _MILLISECONDS[found.group(2)]


def duration(raw: str) -> str:
    """A positive timeout PostgreSQL accepts (0 would turn the timeout off: never wanted here)."""
    value = raw.strip()
    if not 1 <= milliseconds(value) <= _LONGEST_MS:
        raise ValueError("at least 1ms and at most 24 days (0 would mean: wait forever)")
    return value


def yes_no(raw: str) -> str:
    value = raw.strip().lower()
    if value in {"yes", "true", "on", "1"}:
        return "yes"
    if value in {"no", "false", "off", "0", ""}:
        return "no"
    raise ValueError("yes or no")


def mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in MODES:
        raise ValueError(" or ".join(MODES))
    return value


def text(raw: str) -> str:
    return raw


def refresh_interval(raw: str) -> str:
    return intervals.parse(raw).text


@dataclass(frozen=True)
class Option:
    name: str
    env: str | None
    default: str
    parse: Callable[[str], str]
    help: str


OPTIONS = {
    option.name: option
    for option in (
        Option(
            "lock_timeout",
            "TRACE_SUMMARIES_LOCK_TIMEOUT",
            "5s",
            duration,
            "how long any statement may wait for a lock on a live table before the migration "
            "fails instead of stalling ingest",
        ),
        Option(
            "migration_lock_wait",
            "TRACE_SUMMARIES_MIGRATION_LOCK_WAIT",
            "10min",
            duration,
            "how long a second migrator waits for the first to finish before it gives up",
        ),
        Option(
            "summaries",
            "TRACE_SUMMARIES_MODE",
            "view",
            mode,
            "view: the spec's materialized view; incremental: a table maintained from "
            "what changed (fresh installs; switch an existing one with `trace-summaries switch`)",
        ),
        Option(
            "refresh_interval",
            "TRACE_SUMMARIES_REFRESH_INTERVAL",
            intervals.DEFAULT.text,
            refresh_interval,
            "how often the job refreshes the summaries: 10s (pg_cron 1.5 and later, incremental "
            "mode), 2min, 1h; a later upgrade, switch or repair keeps it",
        ),
        Option(
            "cron_database",
            "TRACE_SUMMARIES_CRON_DATABASE",
            "",
            text,
            "the database pg_cron lives in, where its settings are hidden from the migrating role "
            "(default: find it, then try postgres)",
        ),
        Option(
            "require_refresh",
            "TRACE_SUMMARIES_REQUIRE_REFRESH",
            "no",
            yes_no,
            "yes: fail the upgrade instead of ending with a NOTICE when no pg_cron job refreshes "
            "the summaries",
        ),
        Option(
            "reader_role",
            "TRACE_SUMMARIES_READER_ROLE",
            "",
            text,
            "an existing role to grant SELECT on otel_trace_summaries (a dashboard's login)",
        ),
        Option(
            "drop_trace_data",
            None,
            "no",
            yes_no,
            "yes: let `downgrade base` drop an otel_traces that this project created and that "
            "still holds spans",
        ),
    )
}


def given(
    name: str, x_arguments: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """Where option ``name`` was given and its raw value, or None (the default applies)."""
    option = OPTIONS[name]
    env = os.environ if environ is None else environ
    if name in x_arguments:
        return f"-x {name}", x_arguments[name]
    if option.env and env.get(option.env, "") != "":
        return option.env, env[option.env]
    return None


def value(
    name: str, x_arguments: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> str:
    """The validated value of option ``name``."""
    option = OPTIONS[name]
    found = given(name, x_arguments, environ)
    if found is None:
        return option.parse(option.default)
    source, raw = found
    try:
        return option.parse(raw)
    except ValueError as error:
        raise OptionError(f"{source} must be {error}; got {raw!r}") from None


def _x_arguments() -> dict[str, str]:
    from alembic import context

    return context.get_x_argument(as_dictionary=True)


def from_alembic(name: str) -> str:
    """The value of ``name`` for the running alembic command (revisions and env.py)."""
    return value(name, _x_arguments())


def given_to_alembic(name: str) -> bool:
    """Whether the running alembic command was given ``name`` (by -x or the environment)."""
    return given(name, _x_arguments()) is not None
