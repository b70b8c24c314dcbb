"""``trace-summaries repair``: put an installed database right, and say what was wrong.

A trace store goes through imports (``pg_dump``/``pg_restore``), major
upgrades, restores without privileges, replicas. What the summaries need and
what can be lost on the way, each checked and, unless ``dry_run``, restored:

* the record of the mode and interval (the relation's comment), taken from
  what is installed where it is gone;
* the incremental mode's objects: a missing helper table, function or
  trigger is created again, a capture trigger that does not fire is enabled
  as it must be, a missing state row is restored (asking for a full rebuild);
* the metrics function;
* the version row in ``cnpg_trace_summaries_version``;
* the grants: EXECUTE revoked from PUBLIC on every routine of this project,
  granted to ``pg_monitor`` on the metrics function; the reader role's SELECT;
* the pg_cron job, where pg_cron lives, at the recorded interval.

It is idempotent: a second run finds nothing to do. What it cannot do (no
pg_cron, a missing privilege) it says, and the database stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from cnpg_trace_summaries import interval as intervals
from cnpg_trace_summaries import modes, pgcron
from cnpg_trace_summaries.contract import (
    HEAD_REVISION,
    METRICS_FUNCTION,
    STATE_TABLE,
    SUMMARIES,
    TRACES_TABLE,
    VERSION_TABLE,
)
from cnpg_trace_summaries.interval import DEFAULT as DEFAULT_INTERVAL
from cnpg_trace_summaries.place import Place
from cnpg_trace_summaries.sql import common, incremental, metrics
from cnpg_trace_summaries.sql.render import SCHEMA, SCHEMA_LITERAL, set_values
from cnpg_trace_summaries.summaries import CHILDREN_SQL


@dataclass
class Repair:
    """What was found wrong: done (or, in a dry run, to do), and what could not be done."""

    changes: list[str] = field(default_factory=list)
    cannot: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is so, and fine


def _exists(place: Place, obj) -> bool:
    return place.one(f"SELECT {obj.exists(SCHEMA_LITERAL)}")


RELKIND_SQL = f"""
SELECT c.relkind FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = {SCHEMA_LITERAL} AND c.relname = '{SUMMARIES}'
"""
TRIGGER_STATE_SQL = f"""
SELECT CAST(tgenabled AS text) FROM pg_trigger
WHERE tgrelid = CAST(format('%%I.%%I', {SCHEMA_LITERAL}, '{TRACES_TABLE}') AS regclass)
  AND tgname = %s
"""
PUBLIC_MAY_EXECUTE_SQL = (
    "SELECT has_function_privilege('public', CAST(%s AS regprocedure), 'EXECUTE')"
)
MONITOR_MAY_EXECUTE_SQL = f"""
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{metrics.MONITOR_ROLE}')
    OR has_function_privilege('{metrics.MONITOR_ROLE}', CAST(%s AS regprocedure), 'EXECUTE')
"""
VERSION_TABLE_SQL = (
    f"SELECT to_regclass(format('%I.%I', {SCHEMA_LITERAL}, '{VERSION_TABLE}')) IS NOT NULL"
)
CREATE_VERSION_TABLE = (
    f"CREATE TABLE {SCHEMA}.{VERSION_TABLE} (version_num varchar(32) NOT NULL, "
    f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
)
READER_SQL = (
    f"SELECT has_table_privilege(%s, format('%%I.%%I', {SCHEMA_LITERAL}, '{SUMMARIES}'), 'SELECT')"
)
GRANT_READER = f"GRANT SELECT ON {SCHEMA}.{SUMMARIES} TO {{role}}"


def _run(place: Place, result: Repair, dry_run: bool, what: str, *statements: str) -> None:
    """Do ``statements`` (each a template) unless ``dry_run``; record ``what``."""
    if not dry_run:
        with place.conn.transaction():
            for statement in statements:
                place.execute(statement)
    result.changes.append(what)


def repair(
    place: Place, *, cron_database: str = "", reader_role: str = "", dry_run: bool = False
) -> Repair:
    """Check and restore what the installed summaries need; ``place`` is in autocommit."""
    result = Repair()
    try:
        found = modes.installed(place.conn, place.schema)
    except modes.NoRecordError:
        found = _restore_record(place, result, dry_run, cron_database)
    if found is None:
        raise modes.NotInstalledError(modes.NOT_INSTALLED)
    mode = found.mode
    if mode.machinery:
        _repair_machinery(place, result, dry_run)
    if not _exists(place, metrics.METRICS):
        _run(place, result, dry_run, f"created the metrics function {METRICS_FUNCTION}()",
             *metrics.CREATE)  # fmt: skip
    _repair_version(place, result, dry_run)
    _repair_grants(place, result, dry_run, reader_role)
    _repair_job(place, result, dry_run, cron_database)
    return result


def _restore_record(
    place: Place, result: Repair, dry_run: bool, cron_database: str
) -> modes.Installed | None:
    relkind = place.one(RELKIND_SQL)
    if relkind is None:
        return None
    mode = next(m for m in modes.MODES.values() if m.relkind == relkind)
    # The interval: the one the surviving job runs at, else the default.
    job = pgcron.find_job(place, pgcron.locate(place, cron_database)).job
    every = (job and intervals.of_schedule(job.schedule)) or DEFAULT_INTERVAL
    values = {"refresh_interval": every.text}
    if not dry_run:
        with place.conn.transaction():
            place.conn.execute(set_values(values, "%({})s"), values)
            place.execute(common.record(mode.kind, mode.name))
    result.changes.append(
        f"recorded the install in the comment of {SUMMARIES}: {mode.name} mode (from its kind), "
        f"refreshed every {every.text} ({'as its pg_cron job runs' if job else 'the default'}; "
        "change it with `trace-summaries schedule`)"
    )
    record = common.Record(mode.name, every.text, None)
    return modes.Installed(mode, record)


def _repair_machinery(place: Place, result: Repair, dry_run: bool) -> None:
    for obj in (*incremental.TABLES, *incremental.ROUTINES):
        if not _exists(place, obj):
            _run(place, result, dry_run, f"created the missing {obj.kind.lower()} {obj.name}",
                 *obj.create)  # fmt: skip
    if _exists(place, incremental.STATE_OBJECT) and place.one(
        f"SELECT count(*) = 0 FROM {SCHEMA}.{STATE_TABLE}"
    ):
        _run(
            place, result, dry_run,
            "restored the state row (the next refresh rebuilds the summaries in full)",
            f"INSERT INTO {SCHEMA}.{STATE_TABLE} (rebuild_requested, rebuild_requested_at) "
            "VALUES ('its state row was restored by trace-summaries repair', now())",
        )  # fmt: skip
    store = (
        place.one(CHILDREN_SQL, (None, None))["store"]
        if _exists(place, incremental.CHILDREN)
        else incremental.PLAIN_STORE
    )
    for trigger in incremental.triggers_for(store):
        state = place.one(TRIGGER_STATE_SQL, (trigger.name,))
        if state is None:
            _run(place, result, dry_run, f"created the missing capture trigger {trigger.name}",
                 *trigger.create)  # fmt: skip
        elif state not in trigger.accepted_states:
            how = {"O": "ENABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}[trigger.enabled]
            _run(
                place, result, dry_run,
                f"enabled the capture trigger {trigger.name}, which did not fire (run "
                "`trace-summaries refresh --full` for the writes it missed)",
                f"ALTER TABLE {SCHEMA}.{TRACES_TABLE} {how} TRIGGER {trigger.name}",
            )  # fmt: skip


def _repair_version(place: Place, result: Repair, dry_run: bool) -> None:
    table_exists = place.one(VERSION_TABLE_SQL)
    rows = place.one(f"SELECT count(*) FROM {SCHEMA}.{VERSION_TABLE}") if table_exists else 0
    if rows:
        return
    statements = [] if table_exists else [CREATE_VERSION_TABLE]
    statements.append(f"INSERT INTO {SCHEMA}.{VERSION_TABLE} VALUES ('{HEAD_REVISION}')")
    _run(place, result, dry_run, f"recorded revision {HEAD_REVISION} in {VERSION_TABLE}",
         *statements)  # fmt: skip


def _repair_grants(place: Place, result: Repair, dry_run: bool, reader_role: str) -> None:
    for routine in (*incremental.ROUTINES, metrics.METRICS):
        if not _exists(place, routine):
            continue
        signature = place.sql(routine.signature)
        if place.one(PUBLIC_MAY_EXECUTE_SQL, (signature,)):
            _run(place, result, dry_run, f"revoked EXECUTE on {routine.name} from PUBLIC",
                 f"REVOKE ALL ON {routine.kind} {routine.signature} FROM PUBLIC")  # fmt: skip
    if _exists(place, metrics.METRICS) and not place.one(
        MONITOR_MAY_EXECUTE_SQL, (place.sql(metrics.METRICS.signature),)
    ):
        _run(place, result, dry_run, f"granted EXECUTE on {METRICS_FUNCTION} to pg_monitor",
             *metrics.CREATE[1:])  # fmt: skip
    if reader_role:
        try:
            may_read = place.one(READER_SQL, (reader_role,))
        except psycopg.errors.UndefinedObject:
            place.conn.rollback()
            result.cannot.append(f"reader role {reader_role!r} does not exist")
            return
        if not may_read:
            quoted = place.one("SELECT quote_ident(%s)", (reader_role,))
            _run(place, result, dry_run, f"granted SELECT on {SUMMARIES} to {quoted}",
                 GRANT_READER.format(role=quoted))  # fmt: skip


def _repair_job(place: Place, result: Repair, dry_run: bool, cron_database: str) -> None:
    location = pgcron.locate(place, cron_database)
    if location.database is None:
        result.notes.append(
            f"no pg_cron job ({location.how}): refresh with `trace-summaries refresh --every` "
            "or a CronJob"
        )
        return
    found = pgcron.find_job(place, location)
    wanted = pgcron.job(place)
    if found.job is not None and (found.job.command, found.job.schedule) == (
        wanted.command,
        wanted.schedule,
    ):
        return
    what = "re-created the missing" if found.job is None else "updated the"
    if dry_run:
        result.changes.append(f"{what} pg_cron job {wanted.job_name!r} in {location.database}")
        return
    try:
        line = pgcron.schedule(place, location, cron_database)
    except pgcron.CronError as error:
        result.cannot.append(f"schedule the refresh job: {error}")
        return
    result.changes.append(f"{what} pg_cron job: {line}")
