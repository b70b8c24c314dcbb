"""Where the database is, and how its errors and notices reach a person.

Used by alembic/env.py and by the console command, so that both read
``DATABASE_URL`` the same way and fail with the same one-line messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL, Connection, exc, make_url

from cnpg_trace_summaries.sql.render import PINNED_PATH, VALUE_PREFIX, for_schema

NOTICE_LOG = logging.getLogger("cnpg_trace_summaries.notices")

# Schemes people paste: Heroku-style postgres://, libpq's postgresql://, and
# SQLAlchemy's explicit postgresql+psycopg://. All end up on psycopg 3.
_ACCEPTED_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and what to do."""


class MigrationError(Exception):
    """A revision cannot go on; the message is the one line the person running it sees."""


def normalize_url(raw: str) -> URL:
    """Parse a libpq-style or SQLAlchemy-style URL and pin the psycopg 3 driver."""
    value = raw.strip()
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in _ACCEPTED_SCHEMES:
        raise ConfigError(
            "DATABASE_URL must look like postgresql://USER:PASSWORD@HOST:PORT/DBNAME "
            f"(postgres:// and postgresql+psycopg:// work too); got {_redact(value)!r}"
        )
    try:
        url = make_url("postgresql+psycopg://" + value.partition("://")[2])
        url.port  # noqa: B018  -- some SQLAlchemy versions parse the port lazily; force it now
    except ValueError:
        raise ConfigError(
            f"DATABASE_URL is malformed: its port is not a number: {_redact(value)!r}"
        ) from None
    except exc.ArgumentError as error:
        raise ConfigError(f"DATABASE_URL is malformed ({error}): {_redact(value)!r}") from None
    return url


def safe_url(url: URL) -> str:
    """``url`` to show a person: no password, in the user part or in the query."""
    return _redact(url.render_as_string(hide_password=True))


def resolve_database_url(
    environ: Mapping[str, str] | None = None, *, require_reachable_local: bool = True
) -> URL:
    """``DATABASE_URL`` when set; otherwise the local cluster of ``make run``.

    With ``require_reachable_local=False`` (``alembic --sql``, which needs only
    the dialect) a missing local cluster is not an error.
    """
    env = os.environ if environ is None else environ
    raw = env.get("DATABASE_URL", "").strip()
    if raw:
        return normalize_url(raw)
    if not in_checkout():
        if not require_reachable_local:
            return make_url("postgresql+psycopg://")
        raise ConfigError(
            "DATABASE_URL is not set: set it to the database to work on, "
            "like postgresql://USER:PASSWORD@HOST:5432/DBNAME"
        )
    # A developer's checkout: the local cluster of `make run` (imported only here).
    from cnpg_trace_summaries.dev import localdb

    local = localdb.LocalCluster.from_checkout()
    if local.is_initialised():
        if require_reachable_local and not local.is_running():
            raise ConfigError(
                "DATABASE_URL is not set and the local cluster of `make run` is stopped; "
                "start it with `make run` (or `trace-summaries local start`), or set DATABASE_URL"
            )
        return make_url(local.url())
    if not require_reachable_local:
        return make_url("postgresql+psycopg://")
    raise ConfigError(
        "DATABASE_URL is not set and the local cluster has not been created; "
        "run `make run` (or `trace-summaries local start`), or set DATABASE_URL"
    )


def in_checkout() -> bool:
    """Whether this package runs from a checkout of the project (``make run``'s home)."""
    return (Path(__file__).resolve().parents[2] / "alembic.ini").exists() or bool(
        os.environ.get("TRACE_SUMMARIES_LOCAL_DIR")
    )


# -- a place to work: a connection and the schema of the summaries ------------------------
@dataclass
class Place:
    """A live connection and the schema whose summaries it works on.

    Every statement is a template over ``@schema@`` (:mod:`.sql.render`), run
    with the path pinned to ``pg_catalog, pg_temp``, so that nothing resolves
    through a schema another role may write to.
    """

    conn: psycopg.Connection
    schema: str

    def sql(self, template: str, *, parameters: bool = False) -> str:
        return for_schema(template, self.schema, parameters=parameters)

    def execute(self, template: str, params: Any = None) -> psycopg.Cursor:
        return self.conn.execute(self.sql(template, parameters=params is not None), params)

    def one(self, template: str, params: Any = None) -> Any:
        row = self.execute(template, params).fetchone()
        return None if row is None else row[0]


def schema_of(conn: psycopg.Connection) -> str:
    """The schema a session works in: the first schema on its search_path that exists."""
    schema = conn.execute("SELECT pg_catalog.current_schema()").fetchone()[0]
    if schema is None:
        path = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
        raise ConfigError(f"no schema on search_path ({path}) exists in this database")
    return schema


# The path pinned, and the schema named for the project's DO blocks (:func:`.sql.render.do_block`).
PIN_SQL = (
    f"SELECT pg_catalog.set_config('search_path', '{PINNED_PATH}', false), "
    f"pg_catalog.set_config('{VALUE_PREFIX}schema', %s, false)"
)
UNPIN_SQL = (
    "SELECT pg_catalog.set_config('search_path', %s, false), "
    f"pg_catalog.set_config('{VALUE_PREFIX}schema', '', false)"
)


def place(conn: psycopg.Connection) -> Place:
    """``conn``'s schema, then its path pinned for the rest of the session."""
    schema = schema_of(conn)
    conn.execute(PIN_SQL, (schema,))
    return Place(conn, schema)


@contextlib.contextmanager
def pinned(conn: psycopg.Connection) -> Iterator[Place]:
    """``conn`` (a migration's session, which alembic needs unpinned) pinned for the block."""
    schema = schema_of(conn)
    saved = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    conn.execute(PIN_SQL, (schema,))
    try:
        yield Place(conn, schema)
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute(UNPIN_SQL, (saved,))


def describe_database_error(error: exc.DBAPIError, safe_url: str) -> str:
    """One line a person can act on, from a SQLAlchemy-wrapped psycopg error."""
    orig = error.orig
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    reason = " ".join(str(orig).split())
    if error.statement is None or (primary is None and error.connection_invalidated):
        # Failed to connect (host down, wrong password, unknown database...).
        return f"cannot connect to {safe_url}: {reason.removeprefix('connection failed: ')}"
    if primary is None:
        return f"migration failed on {safe_url}: {reason}"
    line = f"migration failed on {safe_url}: {primary} (SQLSTATE {orig.sqlstate})"
    if diag.message_hint:
        line += f"; hint: {' '.join(diag.message_hint.split())}"
    elif orig.sqlstate == "55P03":
        line += (
            "; another session holds a lock this step needs (a long query or refresh on "
            "otel_traces or otel_trace_summaries): try again when it is done, or allow a longer "
            "wait with -x lock_timeout=..."
        )
    return line


@contextlib.contextmanager
def install_notice_logger(connection: Connection) -> Iterator[None]:
    """Log every server NOTICE/WARNING that arrives on ``connection``.

    psycopg drops notices unless a handler is registered; the migrations use
    them to say whether pg_cron now refreshes the summaries or a person has to.
    A NOTICE with a SQLSTATE of class 01 ("warning"), which the revisions give
    to "automatic refresh is OFF", is logged at WARNING, like a WARNING.
    """
    driver_connection = connection.connection.driver_connection

    def handler(diagnostic) -> None:
        warns = diagnostic.severity_nonlocalized == "WARNING" or (
            diagnostic.sqlstate or ""
        ).startswith("01")
        level = logging.WARNING if warns else logging.INFO
        message = diagnostic.message_primary or ""
        if diagnostic.message_hint:
            message += f" (hint: {diagnostic.message_hint})"
        NOTICE_LOG.log(level, "%s: %s", diagnostic.severity_nonlocalized, message)

    driver_connection.add_notice_handler(handler)
    try:
        yield
    finally:
        driver_connection.remove_notice_handler(handler)


def _redact(value: str) -> str:
    """Hide a password in a URL-ish string before it is echoed back."""
    value = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", value)
