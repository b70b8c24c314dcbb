"""Nothing resolves a name through a schema another role can write; a refresh holds no lock it
should not, and a stuck or stolen lock shows.

The attacker is a role with nothing but CREATE on the summaries' schema (every role had that
on ``public`` before PostgreSQL 15). Its functions, if they ever ran, would record who ran
them in a table of its own and try to take the table and superuser: they must never run,
and the job must still refresh.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from cnpg_trace_summaries import contract
from tests.support.commands import run_cli
from tests.support.cron import JOB_COMMANDS
from tests.support.database import Database
from tests.support.incremental import assert_exact, configure, traces_sql
from tests.support.processes import wait_for
from tests.support.revisions import FIRST
from tests.support.roles import ROLE_PASSWORD, grant, login_role
from tests.support.sessions import Background

MODES = ("view", "incremental")

# What a hijacker's function does when it runs: records who ran it, and escalates.
ESCALATE = """
    INSERT INTO public.pwned VALUES (current_user);
    EXECUTE 'GRANT ALL ON TABLE public.otel_traces TO ' || quote_ident('{attacker}');
"""
HIJACKS = {
    # An exact twin of a built-in the definition calls: found first only where the
    # schema comes before pg_catalog on the path.
    "to_hex": "CREATE FUNCTION public.to_hex(bigint) RETURNS text LANGUAGE plpgsql AS "
    "$f$ BEGIN {escalate} RETURN 'x'; END $f$",
    # An overload that matches more closely than the built-in VARIADIC "any": chosen
    # wherever the schema is on the path at all, even after pg_catalog.
    "jsonb_build_object": "CREATE FUNCTION public.jsonb_build_object(text, text, text, bigint, "
    "text, bigint, text, bigint, text, bigint) RETURNS jsonb LANGUAGE plpgsql AS "
    "$f$ BEGIN {escalate} RETURN '{{}}'; END $f$",
    # A procedure of the job's name without arguments: a call without arguments would be
    # ambiguous ("procedure is not unique"), and the job would fail.
    "ambiguous_procedure": "CREATE PROCEDURE public.otel_trace_summaries_refresh() LANGUAGE "
    "plpgsql AS $f$ BEGIN {escalate} END $f$",
}


@pytest.fixture
def attacker(db: Database) -> Iterator[str]:
    """A role that may only CREATE in the schema, and a table that shows whether it got to run."""
    with login_role(db.server, "attacker", databases=(db.dbname,)) as role:
        grant(db.server, db.dbname, "GRANT CREATE ON SCHEMA public TO {}", role)
        db.execute("CREATE TABLE public.pwned (who text)")
        db.execute("GRANT INSERT ON public.pwned TO PUBLIC")
        yield role


def plant(db: Database, role: str) -> None:
    """Every hijack at once: each is its own way in, and none may work."""
    escalate = ESCALATE.format(attacker=role)
    with psycopg.connect(db.as_role(role, ROLE_PASSWORD).url, autocommit=True) as conn:
        for hijack in HIJACKS.values():
            conn.execute(hijack.format(escalate=escalate))


def run_the_job(db: Database, mode: str) -> None:
    """What pg_cron does: the job's command, in a fresh session of the migrating role."""
    with db.connect(autocommit=True) as conn:
        conn.execute(JOB_COMMANDS[mode].format(schema=db.schema))


def assert_gained_nothing(db: Database, role: str) -> None:
    assert db.rows("SELECT who FROM public.pwned") == []
    assert not db.scalar("SELECT has_table_privilege(%s, 'public.otel_traces', 'SELECT')", (role,))
    assert not db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("planted", ["before the install", "after the install"])
def test_a_role_with_only_create_on_the_schema_gains_nothing_and_the_job_still_runs(
    db, attacker, mode, planted
):
    db.migrate("upgrade", FIRST)
    db.execute(traces_sql("t", 20))
    if planted == "before the install":
        plant(db, attacker)
    db.migrate("upgrade", "head", x={"summaries": mode})
    if planted == "after the install":
        plant(db, attacker)
    db.execute(traces_sql("late", 5))
    run_the_job(db, mode)
    with db.connect(autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone() == (25,)
        if mode == "incremental":
            assert_exact(conn)
    for command in (("refresh",), ("refresh", "--full"), ("status",), ("verify",), ("list",)):
        result = run_cli(*command, DATABASE_URL=db.url)
        assert result.returncode in (0, 2), result.stderr
    assert_gained_nothing(db, attacker)


def test_an_overload_that_makes_the_jobs_call_ambiguous_is_named_by_status(db, attacker):
    """The one thing a role with CREATE on the schema can still do: add a procedure of the
    job's name with one more defaulted argument. The job then fails as ambiguous, and status
    says which routine is to blame."""
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    with psycopg.connect(db.as_role(attacker, ROLE_PASSWORD).url, autocommit=True) as conn:
        conn.execute(
            "CREATE PROCEDURE public.otel_trace_summaries_refresh(boolean, jsonb, "
            "extra integer DEFAULT 0) LANGUAGE sql AS $$ SELECT 1 $$"
        )
    with pytest.raises(psycopg.errors.AmbiguousFunction):
        run_the_job(db, "incremental")
    result = run_cli("status", "--json", DATABASE_URL=db.url)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(
        f"owned by {attacker} shares a name with this project's routines" in problem
        for problem in problems
    ), problems
    assert_gained_nothing(db, attacker)


ADVISORY_LOCKS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND classid = %s AND pid = %s
"""


def test_a_reader_that_calls_the_refresh_is_refused_and_holds_no_lock(db):
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    with login_role(db.server, "reader", databases=(db.dbname,)) as reader:
        grant(db.server, db.dbname, "GRANT SELECT ON otel_trace_summaries TO {}", reader)
        reader_db = db.as_role(reader, ROLE_PASSWORD)
        with reader_db.connect(autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute("CALL otel_trace_summaries_refresh()")
            pid = conn.info.backend_pid
            assert db.scalar(ADVISORY_LOCKS, (contract.REFRESH_LOCK_CLASS, pid)) == 0
        # Even with EXECUTE granted by mistake, it checks its privileges before its lock.
        grant(db.server, db.dbname,
              "GRANT EXECUTE ON PROCEDURE otel_trace_summaries_refresh(boolean, jsonb), "
              "otel_trace_summaries_rebuild(regclass, text, jsonb) TO {}", reader)  # fmt: skip
        with reader_db.connect(autocommit=True) as conn:
            for call in ("CALL otel_trace_summaries_refresh()",
                         "CALL otel_trace_summaries_refresh(true)"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not refresh"):
                    conn.execute(call)
                pid = conn.info.backend_pid
                assert db.scalar(ADVISORY_LOCKS, (contract.REFRESH_LOCK_CLASS, pid)) == 0
    with db.connect(autocommit=True) as conn:
        assert conn.execute("CALL otel_trace_summaries_refresh()").fetchone()[0]["refreshed"]


def test_a_full_rebuild_that_fails_releases_its_lock_even_in_a_psql_session(db):
    """Cancelled between two of its committed ranges, as a person's Ctrl-C in psql would."""
    db.migrate("upgrade", "head", x={"summaries": "incremental"})
    db.execute(traces_sql("t", 300))
    with db.connect(autocommit=True) as conn:
        configure(conn, rows_per_rebuild_range=1)
        running = Background(db, lambda c: c.execute("CALL otel_trace_summaries_refresh(true)"))
        wait_for(db, f"SELECT 1 FROM {contract.STATE_TABLE} WHERE rebuild_requested LIKE "
                 "'a full rebuild started%%'", what="the rebuild to have claimed")  # fmt: skip
        db.execute("SELECT pg_cancel_backend(%s)", (running.pid,))
        assert isinstance(running.wait(), psycopg.errors.QueryCanceled)
        # Its session is still open, and holds no lock.
        assert db.scalar(ADVISORY_LOCKS, (contract.REFRESH_LOCK_CLASS, running.pid)) == 0
        with pytest.raises(psycopg.errors.QueryCanceled):
            running.join()
        outcome = conn.execute("CALL otel_trace_summaries_refresh()").fetchone()[0]
        assert outcome["kind"] == "full"  # the interrupted rebuild is done again
        assert_exact(conn)


@pytest.mark.parametrize("mode", MODES)
def test_a_refresh_lock_held_by_a_session_that_is_not_refreshing_shows_in_status(db, mode):
    db.migrate("upgrade", "head", x={"summaries": mode})
    with db.connect(autocommit=True, application_name="someones-psql") as thief:
        key = contract.lock_key_sql(contract.REFRESH_LOCK_CLASS, "'public'")
        thief.execute(f"SELECT pg_advisory_lock({key})")
        pid = thief.info.backend_pid
        result = run_cli("status", "--json", DATABASE_URL=db.url)
        assert result.returncode == 2
        problems = json.loads(result.stdout)["problems"]
        assert any(
            f"the refresh lock is held by pid {pid}" in problem and "someones-psql" in problem
            for problem in problems
        ), problems
        if mode == "incremental":  # the job fails, and says why: never a silent success
            with pytest.raises(psycopg.errors.LockNotAvailable, match=f"held by pid {pid}"):
                run_the_job(db, mode)
    assert run_cli("status", DATABASE_URL=db.url).returncode == 0


# Names that end a dollar quote, a format() placeholder, quotes, a dot, a space.
TRICKY_SCHEMAS = ["x$refresh$y", "a$template$b$in_schema$c", 'p%1$Iq\'s "r".s']


@pytest.mark.parametrize("schema", TRICKY_SCHEMAS)
def test_a_schema_named_with_dollar_tags_and_placeholders_takes_both_modes(db, schema):
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    odd = Database(db.server, db.dbname, schema)
    for mode in MODES:
        odd.migrate("upgrade", "head", x={"summaries": mode})
        odd.execute(traces_sql(mode[:3], 5))
        assert run_cli("refresh", "--full", DATABASE_URL=odd.url).returncode == 0
        assert odd.scalar("SELECT count(*) FROM otel_trace_summaries") >= 5
        if mode == "incremental":
            with odd.connect(autocommit=True) as conn:
                assert_exact(conn)
        odd.migrate("downgrade", FIRST)
