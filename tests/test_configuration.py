"""DATABASE_URL, the -x options, and how bad input ends: one clear line, exit status 1."""

from __future__ import annotations

import pytest

from cnpg_trace_summaries import options
from cnpg_trace_summaries.database import ConfigError, normalize_url, resolve_database_url
from cnpg_trace_summaries.dev import servers
from tests.support.commands import assert_one_clear_line, run_alembic, run_cli
from tests.support.database import Database
from tests.support.revisions import FIRST


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://app:pw@db.example:5432/app",
        "postgresql://app:pw@db.example:5432/app",
        "postgresql+psycopg://app:pw@db.example:5432/app",
    ],
)
def test_database_url_accepts_postgres_and_postgresql_schemes_and_uses_psycopg(raw):
    url = normalize_url(raw)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "pw",
        "db.example",
        5432,
        "app",
    )


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("mysql://app@db/app", "DATABASE_URL must look like postgresql://"),
        ("db.example:5432/app", "DATABASE_URL must look like postgresql://"),
        ("postgresql://app@db:notaport/app", "DATABASE_URL is malformed"),
    ],
)
def test_malformed_database_url_is_refused_with_the_password_hidden(raw, complaint):
    with pytest.raises(ConfigError, match=complaint) as raised:
        normalize_url(raw.replace("app@", "app:hunter2@"))
    assert "hunter2" not in str(raised.value)


def test_database_url_wins_over_the_local_cluster():
    url = resolve_database_url({"DATABASE_URL": "postgres://u@h/d"})
    assert url.render_as_string() == "postgresql+psycopg://u@h/d"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("lock_timeout", "250ms", "250ms"),
        ("require_refresh", "YES", "yes"),
        ("require_refresh", "off", "no"),
        ("summaries", "Incremental", "incremental"),
    ],
)
def test_an_option_is_read_from_x_first_then_the_environment(name, raw, expected):
    option = options.OPTIONS[name]
    assert options.value(name, {name: raw}, {}) == expected
    assert options.value(name, {}, {option.env: raw}) == expected
    assert options.value(name, {}, {}) == options.OPTIONS[name].parse(option.default)


def nowhere() -> str:
    """A database URL nothing listens on: an error about it means a connection was tried."""
    return f"postgresql://u:pw@127.0.0.1:{servers.free_port()}/app"


def test_unreachable_database_ends_with_one_clear_line():
    url = nowhere()
    result = run_alembic("upgrade", "head", database_url=url, check=False)
    assert_one_clear_line(result, "alembic: cannot connect to", url.rpartition("@")[2], "refused")
    assert "pw@" not in result.stderr


def test_a_password_in_the_url_query_never_reaches_the_output():
    url = nowhere().replace("u:pw@", "u@") + "?password=hunter2&sslmode=disable"
    for result, program in (
        (run_alembic("upgrade", "head", database_url=url, check=False), "alembic"),
        (run_cli("status", DATABASE_URL=url), "trace-summaries"),
    ):
        assert_one_clear_line(result, f"{program}: cannot connect to", "password=***")
        assert "hunter2" not in result.stderr + result.stdout


def test_wrong_password_ends_with_one_clear_line(db: Database):
    url = db.server.url(db.dbname, user=db.role, password="wrong")
    result = run_alembic("upgrade", "head", database_url=url, check=False)
    assert_one_clear_line(result, "cannot connect to", "password authentication failed")
    assert "wrong" not in result.stderr


def test_malformed_database_url_ends_the_alembic_command_with_one_clear_line():
    result = run_alembic("current", database_url="postgresql://u@h:port/db", check=False)
    assert_one_clear_line(result, "alembic: DATABASE_URL is malformed")


def test_unknown_revision_ends_with_one_clear_line(db: Database):
    result = db.alembic("upgrade", "0000000000ff", check=False)
    # alembic's own exit status for a CommandError is 255.
    assert_one_clear_line(
        result, "Can't locate revision identified by '0000000000ff'", exit_status=255
    )
    assert db.scalar("SELECT to_regclass('otel_traces')") is None


@pytest.mark.parametrize(
    ("x", "complaint"),
    [
        ("lock_timeout=1s'; DROP TABLE x; --", "-x lock_timeout must be a number"),
        ("lock_timeout=0", "-x lock_timeout must be at least 1ms"),
        ("migration_lock_wait=soon", "-x migration_lock_wait must be a number"),
        ("summaries=fast", "-x summaries must be view or incremental"),
        ("require_refresh=maybe", "-x require_refresh must be yes or no"),
        ("lockk_timeout=5s", "unknown -x option lockk_timeout"),
    ],
)
def test_a_bad_option_is_refused_with_one_clear_line_before_anything_connects(x, complaint):
    result = run_alembic("-x", x, "upgrade", "head", database_url=nowhere(), check=False)
    assert_one_clear_line(result, complaint)


def test_a_bad_option_in_the_environment_names_the_variable():
    result = run_alembic(
        "upgrade", "head", database_url=nowhere(), check=False, TRACE_SUMMARIES_MODE="fast"
    )
    assert_one_clear_line(result, "TRACE_SUMMARIES_MODE must be view or incremental")


def test_migrations_wait_at_most_lock_timeout_for_a_busy_table(db: Database):
    db.migrate("upgrade", FIRST)
    with db.connect() as holder:
        holder.execute("LOCK TABLE otel_traces IN ACCESS EXCLUSIVE MODE")
        result = db.alembic("-x", "lock_timeout=300ms", "upgrade", "head", check=False)
    assert_one_clear_line(result, "canceling statement due to lock timeout", "55P03")
    assert db.scalar("SELECT to_regclass('otel_trace_summaries')") is None


def test_sql_script_needs_no_database():
    result = run_alembic("upgrade", "head", "--sql", database_url=None)
    assert "CREATE MATERIALIZED VIEW otel_trace_summaries" in result.stdout
    assert "SET lock_timeout = '5s';" in result.stdout
