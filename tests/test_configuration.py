"""DATABASE_URL, the -x options, and how bad input ends: one clear line, exit status 1."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from cnpg_trace_summaries import database, options
from cnpg_trace_summaries.database import (
    ConfigError,
    normalize_url,
    resolve_database_url,
    safe_url,
)
from cnpg_trace_summaries.dev import servers
from tests.support.commands import assert_one_clear_line, run_alembic, run_cli
from tests.support.database import Database
from tests.support.revisions import FIRST
from tests.support.servers import newest_major_only


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


def test_outside_a_checkout_a_missing_database_url_is_named(monkeypatch):
    """In a pod (the package installed, no checkout, no local cluster): say what to set."""
    monkeypatch.setattr(database, "in_checkout", lambda: False)
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is not set: set it to the database"):
        resolve_database_url({})


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


# -- secrets in DATABASE_URL never reach the output ------------------------------------------
# A DATABASE_URL (with {user}, {where} = host:port and {db} to fill in), its secrets, and whether
# libpq reads it as meant (then a server with a wrong password is reached and says so). An
# unencoded '@' in the user-info makes libpq (and SQLAlchemy) end the password at the first '@'
# and take the rest for the host name, which their errors then repeat.
SECRET_URLS = {
    "unencoded-at": ("postgresql://{user}:p@ss@w0rd@{where}/{db}", ["p@ss@w0rd"], False),
    "unencoded-ats": (
        "postgresql://{user}:Sup3r@Secr3t@Tail9@{where}/{db}",
        ["Sup3r@Secr3t@Tail9"],
        False,
    ),
    "unencoded-at-and-slash": (
        "postgresql://{user}:Sup3r@Secr3t/Tail9@{where}/{db}",
        ["Sup3r@Secr3t/Tail9"],
        False,
    ),
    "sslpassword": (
        "postgresql://{user}:Wr0ngPass@{where}/{db}?sslpassword=TopSecret1",
        ["Wr0ngPass", "TopSecret1"],
        True,
    ),
    "sslpassword-with-at": (
        "postgresql://{where}/{db}?sslpassword=TopSecret1@Tail9",
        ["TopSecret1@Tail9"],
        False,
    ),
    "query-password": (
        "postgresql://{user}@{where}/{db}?password=Hunter2Query&sslmode=disable",
        ["Hunter2Query"],
        True,
    ),
    "percent-encoded": (
        "postgresql://{user}:" + quote("p@ss:w0rd/Enc0ded", safe="") + "@{where}/{db}",
        ["p@ss:w0rd/Enc0ded"],
        True,
    ),
}


def fragments(secret: str) -> set[str]:
    """What of ``secret`` must not be shown: all of it (also percent-encoded), and every run of
    its parts between the characters a URL parser cuts at, of 3 characters or more."""
    cuts = [m.start() for m in re.finditer(r"[@:/?#&=]", secret)]
    runs = {secret[a:b] for a in [0, *(c + 1 for c in cuts)] for b in [*cuts, len(secret)]}
    return {run for run in runs | {quote(secret, safe="")} if len(run) >= 3}


def leaked(result, secrets: list[str]) -> list[str]:
    output = result.stdout + result.stderr
    return sorted(f for secret in secrets for f in fragments(secret) if f in output)


COMMANDS = {
    "alembic upgrade head": lambda url: run_alembic(
        "upgrade", "head", database_url=url, check=False
    ),
    "trace-summaries status": lambda url: run_cli("status", DATABASE_URL=url),
    # --json puts the problem on stdout too
    "trace-summaries status --json": lambda url: run_cli("status", "--json", DATABASE_URL=url),
}


def assert_no_secret_shown(url: str, secrets: list[str], *line: str) -> None:
    """Each command against ``url`` ends with one clear line that says ``line``, and no
    fragment of ``secrets`` is on its stdout or stderr."""
    shown = {}
    for name, run in COMMANDS.items():
        result = run(url)
        assert_one_clear_line(result, f"{name.split()[0]}: ", *line)
        if leaks := leaked(result, secrets):
            shown[name] = (leaks, result.stderr, result.stdout)
    assert not shown


def test_fragments_are_the_runs_of_a_secrets_parts():
    assert fragments("p@ss@w0rd") == {"p@ss@w0rd", "p%40ss%40w0rd", "p@ss", "ss@w0rd", "w0rd"}


@pytest.mark.parametrize("case", list(SECRET_URLS))
def test_no_secret_in_the_url_reaches_the_output_when_nothing_listens(case):
    template, secrets, _ = SECRET_URLS[case]
    url = template.format(user="app", where=f"127.0.0.1:{servers.free_port()}", db="app")
    assert_no_secret_shown(url, secrets, "cannot connect to")


# What is hidden is decided in Python, around libpq: one major version is enough.
@newest_major_only
@pytest.mark.parametrize("case", list(SECRET_URLS))
def test_no_secret_in_the_url_reaches_the_output_when_the_password_is_wrong(server, case):
    template, secrets, read_as_meant = SECRET_URLS[case]
    url = template.format(user=server.user, where=f"{server.host}:{server.port}", db="postgres")
    reason = "password authentication failed" if read_as_meant else ""
    assert_no_secret_shown(url, secrets, "cannot connect to", reason)


@pytest.mark.parametrize(
    ("raw", "secrets"),
    [
        ("mysql://app:p@ss@w0rd@db/app", ["p@ss@w0rd"]),
        ("app:Hunter2Bare@db:5432/app", ["Hunter2Bare"]),
        ("mysql://app@db/app?sslpassword=TopSecret1", ["TopSecret1"]),
        ("postgres://app@db:port/app?password=Hunter2Query", ["Hunter2Query"]),
        ("postgresql://app:Sup3r@Secr3t:Tail9@db:5432/app", ["Sup3r@Secr3t:Tail9"]),
        ("postgresql://app:Sup3r@Secr3t@db:notaport/app", ["Sup3r@Secr3t"]),
        ("mysql://app:p%40ss%3Aw0rd@db/app", ["p@ss:w0rd"]),
    ],
)
def test_a_malformed_url_is_refused_without_any_of_its_secrets(raw, secrets):
    with pytest.raises(ConfigError) as raised:
        normalize_url(raw)
    message = str(raised.value)
    assert "\n" not in message
    assert not [f for secret in secrets for f in fragments(secret) if f in message], message


def test_a_malformed_url_with_secrets_ends_both_commands_with_one_clear_line():
    url = "postgresql://app:Sup3r@Secr3t:Tail9@db:5432/app?sslpassword=TopSecret1"
    assert_no_secret_shown(url, ["Sup3r@Secr3t:Tail9", "TopSecret1"], "DATABASE_URL is malformed")


def test_a_short_secret_is_hidden_only_where_it_stands_alone():
    # libpq reads the password of postgresql://app:p@ss@w0rd@host as "p", and its host as
    # "ss@w0rd@host": "p" and "ss" are hidden there, not in every word that holds them.
    from cnpg_trace_summaries.database import mask, url_secrets

    secrets = url_secrets("postgresql://app:p@ss@w0rd@db.example/app")
    assert mask("postgresql+psycopg://app@db.example/app: 'ss@w0rd@db.example'", secrets) == (
        "postgresql+psycopg://app@db.example/app: '***@db.example'"
    )
    assert mask("host 'ss' of class pass", {"ss", "p"}) == "host '***' of class pass"


def test_a_url_without_ambiguity_is_shown_with_only_its_secrets_hidden():
    url = normalize_url(
        "postgresql://app:pw@db.example:5432/app?application_name=me@there&sslpassword=TopSecret1"
    )
    assert safe_url(url) == (
        "postgresql+psycopg://app:***@db.example:5432/app"
        "?application_name=me%40there&sslpassword=***"
    )


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
    assert "CREATE MATERIALIZED VIEW %1$I.otel_trace_summaries" in result.stdout
    assert "SET lock_timeout = '5s';" in result.stdout
