"""The modes of otel_trace_summaries, in one registry.

* ``view`` (the default, the spec's): a materialized view, refreshed by
  ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` (:mod:`.sql.view`).
* ``incremental``: a table maintained from what changed (:mod:`.sql.incremental`).

Each mode declares here what every command needs of it: its relation kind,
how it installs itself (and what else it installs beside the relation), what
the job runs, what ``trace-summaries refresh`` runs, and whether ``verify``
has anything to compare. Nothing else compares mode names.

The installed mode is read from the summaries' record (their comment,
:mod:`.sql.common`), which survives a dump and a restore, never guessed from
the relation's kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from cnpg_trace_summaries.contract import SUMMARIES
from cnpg_trace_summaries.sql import cron, incremental, metrics, view
from cnpg_trace_summaries.sql.common import Record, parse_record
from cnpg_trace_summaries.sql.render import SCHEMA, SCHEMA_LITERAL, for_schema


@dataclass(frozen=True)
class Mode:
    name: str
    kind: str  # what COMMENT ON, DROP and ALTER call the relation
    relkind: str  # pg_class.relkind of the relation
    # The relation (name, index suffix), its indexes and its record: one transaction.
    create: Callable[[str, str], list[str]]
    # What else it installs (after the relation, in the same transaction), and what fills it.
    machinery: tuple = ()
    create_machinery: Callable[[], list[str]] = list
    build: str | None = None  # run after the install, outside a transaction block
    # What `trace-summaries refresh` runs (for_schema; %(full)s: a full rebuild asked for).
    refresh: str = ""
    # Whether the relation can differ from its definition (verify compares it).
    can_drift: bool = False

    @property
    def job_command(self) -> str:
        """The command the job runs, over ``{schema}`` (a SQL expression)."""
        return cron.COMMANDS[self.name]


VIEW = Mode(
    "view",
    view.KIND,
    "m",
    view.create,
    refresh=f"REFRESH MATERIALIZED VIEW CONCURRENTLY {SCHEMA}.{SUMMARIES}",
)
INCREMENTAL = Mode(
    "incremental",
    incremental.KIND,
    "r",
    incremental.create,
    incremental.OBJECTS,
    incremental.create_machinery,
    incremental.BUILD,
    refresh=f"CALL {SCHEMA}.{incremental.REFRESH.name}(%(full)s, NULL)",
    can_drift=True,
)
MODES = {mode.name: mode for mode in (VIEW, INCREMENTAL)}
DEFAULT = VIEW


def install_statements(mode: Mode) -> list[str]:
    """A new install of ``mode``, in one transaction: the relation, what the mode adds
    beside it, and what every mode has (the metrics function)."""
    return [*mode.create(SUMMARIES, ""), *mode.create_machinery(), *metrics.CREATE]


RECORD_SQL = f"""
SELECT obj_description(c.oid, 'pg_class'), c.relkind
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = {SCHEMA_LITERAL} AND c.relname = '{SUMMARIES}'
"""

NOT_INSTALLED = (
    "otel_trace_summaries does not exist in this database; run `alembic upgrade head` first"
)


class NotInstalledError(LookupError):
    """otel_trace_summaries is not in the schema worked on."""


class NoRecordError(LookupError):
    """otel_trace_summaries is there, but its record (which mode, which interval) is not."""


@dataclass(frozen=True)
class Installed:
    mode: Mode
    record: Record


def installed(conn: psycopg.Connection, schema: str) -> Installed | None:
    """What is installed in ``schema``: None when otel_trace_summaries is not there.

    Raises :class:`NoRecordError` when it is there without a readable record.
    """
    row = conn.execute(for_schema(RECORD_SQL, schema)).fetchone()
    if row is None:
        return None
    found = parse_record(row[0])
    if found is None or found.mode not in MODES:
        raise NoRecordError(
            f"otel_trace_summaries in schema {schema} has no record of its mode and refresh "
            "interval (its comment was changed or lost): run `trace-summaries repair`"
        )
    return Installed(MODES[found.mode], found)


def require(conn: psycopg.Connection, schema: str) -> Installed:
    found = installed(conn, schema)
    if found is None:
        raise NotInstalledError(NOT_INSTALLED)
    return found
