"""One place to migrate: a database, the schema first on its search_path, and who connects."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from cnpg_trace_summaries import contract, modes
from tests.support.commands import migrate, run_alembic
from tests.support.servers import fresh_database


@dataclass
class Database:
    server: Any  # a servers.Cluster or an ExternalServer
    dbname: str
    schema: str = "public"
    user: str | None = None  # None: the server's superuser
    password: str | None = None

    @property
    def role(self) -> str:
        return self.user or self.server.user

    @property
    def url(self) -> str:
        return self.server.url(
            self.dbname,
            user=self.user,
            password=self.password,
            schema=None if self.schema == "public" else self.schema,
        )

    def as_role(self, user: str, password: str) -> Database:
        return replace(self, user=user, password=password)

    def as_superuser(self) -> Database:
        return replace(self, user=None, password=None)

    @property
    def job_name(self) -> str:
        with self.connect() as conn:
            return contract.job_name(conn, self.dbname, self.schema)

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, **kwargs)

    def scalar(self, query: str, params: Any = None) -> Any:
        with self.connect() as conn:
            row = conn.execute(query, params).fetchone()
            return None if row is None else row[0]

    def rows(self, query: str, params: Any = None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, query: str, params: Any = None) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(query, params)

    def migrate(self, name: str, *args, x: dict[str, str] | None = None, **kwargs) -> str:
        """An alembic command in-process; returns the NOTICEs it logged."""
        return migrate(self.url, name, *args, x=x, **kwargs)

    def alembic(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        """The alembic command line against this database, as a user runs it."""
        return run_alembic(*args, database_url=self.url, check=check, **env)

    def mode(self) -> str | None:
        """The installed mode, as the summaries' record says (None: not installed)."""
        with self.connect() as conn:
            found = modes.installed(conn, self.schema)
        return None if found is None else found.mode.name

    def version(self) -> str | None:
        return self.scalar(
            f"SELECT version_num FROM {contract.VERSION_TABLE}"
            if self.scalar("SELECT to_regclass(%s)", (contract.VERSION_TABLE,))
            else "SELECT NULL"
        )


@contextmanager
def schema_in(
    server,
    dbname: str,
    owner: str | None = None,
    password: str | None = None,
    *,
    name: str | None = None,
) -> Iterator[Database]:
    """A fresh schema in ``dbname`` (owned by and reached as ``owner``), dropped with its job.

    ``name``: the schema's name (long, non-ASCII: chosen by the test); a
    random ``t_...`` name by default.

    In the database pg_cron lives in, a schema per test is how tests share one
    pg_cron: the extension lives in one database only, and dropping that
    database would stop pg_cron's scheduler for good. The schema is first on
    the search_path, which also proves that the job's command is qualified.
    """
    schema = name or f"t_{uuid.uuid4().hex[:10]}"
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(owner or server.user)
            )
        )
        job = contract.job_name(conn, dbname, schema)
    try:
        yield Database(server, dbname, schema, owner, password)
    finally:
        with server.connect(dbname, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('cron.job')").fetchone()[0]:
                conn.execute("DELETE FROM cron.job WHERE jobname = %s", (job,))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def new_database(server, prefix: str = "t", **options: str) -> Iterator[Database]:
    """A fresh database on ``server``, reached as its superuser; dropped afterwards."""
    with fresh_database(server, prefix, **options) as name:
        yield Database(server, name)
