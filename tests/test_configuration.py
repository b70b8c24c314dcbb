"""DATABASE_URL, and how bad input ends: one clear line, exit status 1, no traceback."""

from __future__ import annotations

import port_for
import pytest

from cnpg_trace_summaries.database import ConfigError, normalize_url, resolve_database_url
from tests.conftest import Database, run_alembic


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
    with pytest.raises(ConfigError, match=complaint):
        normalize_url(raw.replace("app@", "app:hunter2@"))
    try:
        normalize_url(raw.replace("app@", "app:hunter2@"))
    except ConfigError as error:
        assert "hunter2" not in str(error)


def test_database_url_wins_over_the_local_cluster():
    url = resolve_database_url({"DATABASE_URL": "postgres://u@h/d"})
    assert url.render_as_string() == "postgresql+psycopg://u@h/d"


def assert_one_clear_line(result, *fragments: str, exit_status: int = 1) -> None:
    assert result.returncode == exit_status
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, result.stderr


def test_unreachable_database_ends_with_one_clear_line():
    port = port_for.select_random()
    result = run_alembic(
        "upgrade", "head", database_url=f"postgresql://u:pw@127.0.0.1:{port}/app", check=False
    )
    assert_one_clear_line(result, "alembic: cannot connect to", f":{port}/app", "refused")
    assert "pw@" not in result.stderr


def test_wrong_password_ends_with_one_clear_line(nocron_db: Database):
    url = nocron_db.url.replace(":s3cret-for-tests@", ":wrong@")
    result = run_alembic("upgrade", "head", database_url=url, check=False)
    assert_one_clear_line(result, "cannot connect to", "password authentication failed")
    assert "wrong" not in result.stderr


def test_malformed_database_url_ends_the_alembic_command_with_one_clear_line():
    result = run_alembic("current", database_url="postgresql://u@h:port/db", check=False)
    assert_one_clear_line(result, "alembic: DATABASE_URL is malformed")


def test_unknown_revision_ends_with_one_clear_line(nocron_db: Database):
    result = nocron_db.alembic("upgrade", "0000000000ff", check=False)
    # alembic's own exit status for a CommandError is 255.
    assert_one_clear_line(
        result, "Can't locate revision identified by '0000000000ff'", exit_status=255
    )
    assert nocron_db.scalar("SELECT to_regclass('otel_traces')") is None


def test_lock_timeout_is_validated_not_pasted_into_sql(nocron_db: Database):
    result = nocron_db.alembic(
        "-x", "lock_timeout=1s'; DROP TABLE x; --", "upgrade", "head", check=False
    )
    assert_one_clear_line(result, "lock_timeout must be a number")
    assert nocron_db.scalar("SELECT to_regclass('otel_traces')") is None


def test_migrations_wait_at_most_lock_timeout_for_a_busy_table(nocron_db: Database):
    nocron_db.alembic("upgrade", "00000000000001")
    with nocron_db.connect() as holder:
        holder.execute("LOCK TABLE otel_traces IN ACCESS EXCLUSIVE MODE")
        result = nocron_db.alembic("-x", "lock_timeout=300ms", "upgrade", "head", check=False)
    assert_one_clear_line(result, "canceling statement due to lock timeout", "55P03")
    assert nocron_db.scalar("SELECT to_regclass('otel_trace_summaries')") is None


def test_sql_script_needs_no_database():
    result = run_alembic("upgrade", "head", "--sql", database_url=None)
    assert "CREATE MATERIALIZED VIEW otel_trace_summaries" in result.stdout
    assert "SET lock_timeout = '5s';" in result.stdout
