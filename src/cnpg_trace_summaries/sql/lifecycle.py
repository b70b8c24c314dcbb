"""Installing over what is there, and removing: the SQL that knows every mode's objects.

* :data:`PREPARE` runs before an install. It refuses an otel_trace_summaries
  this project did not create; keeps a complete install (its record's mode
  and every object of that mode are there: a database restored from a dump,
  whose version table came back empty); and removes what an interrupted run
  or switch left, so that it can be built again.
* :data:`UNINSTALL` removes whichever mode is installed, completely, in the
  order that never holds otel_traces while it waits: the refresh lock first
  (a running refresh is waited for, nothing else held), then the readers'
  relations (so that a dashboard's long query is waited for before
  otel_traces is), then the capture triggers, which lock otel_traces (from
  here on inserts wait, and the transaction waits for nothing but them), then
  the rest. Every wait is bounded by lock_timeout.
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import (
    CREATED_MARKER,
    REFRESH_LOCK_CLASS,
    SUMMARIES,
    lock_key_sql,
)
from cnpg_trace_summaries.sql import incremental, metrics
from cnpg_trace_summaries.sql.common import NEXT, RECORDED_MODE_SQL
from cnpg_trace_summaries.sql.render import VALUE_PREFIX, do_block, executes, value

_LOCK_KEY = lock_key_sql(REFRESH_LOCK_CLASS, "target")


def _relkind(relation: str) -> str:
    return (
        "(SELECT relkind FROM pg_class "
        f"WHERE oid = to_regclass(format('%I.%I', target, '{relation}')))"
    )


def _drop_relation(relation: str) -> str:
    return f"""        IF {_relkind(relation)} = 'm' THEN
{executes([f"DROP MATERIALIZED VIEW @schema@.{relation}"], "            ")}
        ELSIF {_relkind(relation)} = 'r' THEN
{executes([f"DROP TABLE @schema@.{relation}"], "            ")}
        END IF;"""


def _drop_machinery() -> str:
    """Drops whatever exists of the incremental machinery, in the reverse of creation
    order: the triggers first, taking otel_traces' lock before anything else (an insert
    that holds otel_traces and waits for the dirty table would otherwise deadlock with
    this transaction). Nothing touches otel_traces where the triggers do not exist."""
    lines = []
    seen = set()
    for obj in reversed(incremental.OBJECTS):
        if obj.drop in seen:  # a trigger with one name for two kinds of store
            continue
        seen.add(obj.drop)
        lines.append(
            f"        IF {obj.exists()} THEN\n{executes([obj.drop], '            ')}\n        END IF;"
        )
    return "\n".join(lines)


def _remove() -> str:
    lines = [f"        PERFORM pg_advisory_xact_lock({_LOCK_KEY});"]
    for relation in (SUMMARIES, NEXT):
        lines.append(
            f"""        IF {_relkind(relation)} = 'r' THEN
{executes([f"LOCK TABLE @schema@.{relation} IN ACCESS EXCLUSIVE MODE"], "            ")}
        ELSIF {_relkind(relation)} = 'm' THEN
{executes([f"DROP MATERIALIZED VIEW @schema@.{relation}"], "            ")}
        END IF;"""
        )
    lines += [
        _drop_machinery(),
        _drop_relation(SUMMARIES),
        _drop_relation(NEXT),
        executes([f"DROP FUNCTION IF EXISTS {metrics.METRICS.signature}"]),
    ]
    return "\n".join(lines)


# Removes whichever mode is installed, completely; the downgrade runs it.
UNINSTALL = do_block(_remove(), purpose="remove otel_trace_summaries and everything of its mode")

# Drops whatever exists of the incremental machinery.
DROP_MACHINERY = do_block(_drop_machinery(), purpose="drop the incremental mode's machinery")

# Drops what a switch built beside the old relation, a table or a view.
DROP_NEXT = do_block(_drop_relation(NEXT), purpose=f"drop {NEXT}, left by a switch")

_ANY_MACHINERY = " OR ".join(dict.fromkeys(obj.exists() for obj in incremental.OBJECTS))
_ANY_LEFT = f"{_ANY_MACHINERY} OR {metrics.METRICS.exists()}"
_ALL_MACHINERY = " AND ".join(
    dict.fromkeys(obj.exists() for obj in (*incremental.TABLES, *incremental.ROUTINES))
)

# Before installing (a transaction of its own, so that otel_traces is locked only
# for as long as leftover triggers take to drop, not for the build that follows).
PREPARE = do_block(
    purpose="check what is installed: keep it, or remove what an interrupted run left",
    plpgsql=f"""        existing := to_regclass(format('%I.%I', target, '{SUMMARIES}'));
        comment := coalesce(obj_description(existing, 'pg_class'), '');
        IF existing IS NOT NULL AND comment NOT LIKE '%{CREATED_MARKER}%' THEN
            RAISE EXCEPTION 'otel_trace_summaries already exists in schema % and was not created by this project', target
                USING HINT = 'It is probably left from an older hand-written migration. Check nothing else '
                             'depends on it, then DROP MATERIALIZED VIEW otel_trace_summaries and upgrade again.',
                      DETAIL = coalesce(nullif(comment, ''), 'no comment; not {CREATED_MARKER}');
        END IF;
        recorded := {RECORDED_MODE_SQL.format(comment="comment")};
        IF (recorded = 'view' AND {_relkind(SUMMARIES)} = 'm')
           OR (recorded = 'incremental' AND {_relkind(SUMMARIES)} = 'r' AND {_ALL_MACHINERY}) THEN
            RAISE NOTICE 'otel_trace_summaries in schema % is installed in % mode: kept as it is', target, recorded;
            EXIT work;
        END IF;
        IF existing IS NOT NULL OR to_regclass(format('%I.%I', target, '{NEXT}')) IS NOT NULL
           OR {_ANY_LEFT} THEN
            RAISE NOTICE 'otel_trace_summaries in schema % was left incomplete by an interrupted run: removing it to build it again',
                target;
{_remove()}
        END IF;""",
    declare="\n        existing pg_catalog.regclass;\n        comment pg_catalog.text;\n        recorded pg_catalog.text;",
)


# Whether this run installs the summaries (value installing): decided once, at the
# start of the install's transaction, so that every step of it agrees.
DECIDE = do_block(
    purpose="decide whether this run installs the summaries",
    plpgsql=f"""        PERFORM set_config('{VALUE_PREFIX}installing',
            CASE WHEN to_regclass(format('%I.%I', target, '{SUMMARIES}')) IS NULL THEN 'yes' ELSE 'no' END, true);""",
)


def install_step(statement: str) -> str:
    """``statement`` (a DO block of :func:`do_block`) only where :data:`DECIDE` said this run
    installs: skipped where :data:`PREPARE` kept a complete install."""
    marker = "\n    BEGIN\n"
    if marker not in statement:
        raise ValueError("not a do_block")
    guard = (
        f"{marker}        IF coalesce({value('installing')}, '') <> 'yes' THEN\n"
        "            EXIT work;\n        END IF;\n"
    )
    return statement.replace(marker, guard, 1)


# Readers' grants on the old relation, given again on the one a switch built beside it.
COPY_GRANTS = do_block(
    purpose=f"give {NEXT} the readers' grants of otel_trace_summaries",
    plpgsql=f"""        FOR grant_to IN
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
            FROM pg_class AS c, aclexplode(c.relacl) AS a
            WHERE c.oid = to_regclass(format('%I.%I', target, '{SUMMARIES}'))
              AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('GRANT SELECT ON %I.%I TO %s', target, '{NEXT}', grant_to);
        END LOOP;""",
    declare="\n        grant_to pg_catalog.text;",
)

# Leftovers of an interrupted switch: what it built beside the relation, and any of
# the incremental mode's machinery (in view mode, its triggers would keep filling a
# dirty table that nobody reads). Two booleans; for a live connection (for_schema).
LEFTOVERS_SQL = f"""
SELECT to_regclass(format('%I.%I', target, '{NEXT}')) IS NOT NULL, {_ANY_MACHINERY}
FROM (SELECT @schema_literal@ AS target) AS here
"""
