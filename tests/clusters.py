"""Throwaway PostgreSQL servers for the test session, and databases in them.

The servers are pytest-postgresql's ``PostgreSQLExecutor`` (pg_ctl under
mirakuru) and databases are made by its ``DatabaseJanitor``. Its
``postgresql_proc`` fixture factory is not used: it puts the data directory
under pytest's basetemp, which is private to the user running pytest (0700),
and initdb/postgres refuse to run as root. When the tests run as root (as CI
does), pg_ctl runs as the ``postgres`` system user through a small wrapper,
in a directory that user owns.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import port_for
import psycopg
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from cnpg_trace_summaries.localdb import SERVER_SYSTEM_USER, chown_to_server_user, server_bindir

CRON_DATABASE = "trace_summaries_cron"
SUPERUSER = "postgres"

PG_CRON_SETTINGS = {
    "shared_preload_libraries": "pg_cron",
    "cron.database_name": CRON_DATABASE,
    "cron.use_background_workers": "on",
    "cron.timezone": "UTC",
    "max_worker_processes": "32",
}


@dataclass
class Server:
    """Where a PostgreSQL server listens, and how a superuser reaches it."""

    host: str
    port: int
    user: str = SUPERUSER
    password: str | None = None
    has_pg_cron: bool = False
    cron_database: str | None = None
    executor: PostgreSQLExecutor | None = field(default=None, repr=False)

    def url(self, dbname: str, schema: str | None = None) -> str:
        """A libpq URL; ``schema`` is put first on the search_path of every session."""
        auth = quote(self.user) + (f":{quote(self.password)}" if self.password else "")
        url = f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname)}"
        if schema:
            url += "?options=" + quote(f"-csearch_path={schema}")
        return url

    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url(dbname), **kwargs)

    def janitor(self, dbname: str) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user, host=self.host, port=self.port, dbname=dbname, password=self.password
        )

    @contextmanager
    def fresh_database(self, prefix: str = "t") -> Iterator[str]:
        """A new, empty database, dropped afterwards."""
        dbname = f"{prefix}_{uuid.uuid4().hex[:10]}"
        janitor = self.janitor(dbname)
        janitor.init()
        try:
            yield dbname
        finally:
            janitor.drop()


def _pg_ctl_for_this_user(workdir: Path) -> str:
    """pg_ctl itself, or when we are root a wrapper that runs it as ``postgres``."""
    pg_ctl = server_bindir() / "pg_ctl"
    if os.geteuid() != 0:
        return str(pg_ctl)
    wrapper = workdir / "pg_ctl"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# initdb and postgres refuse to run as root.\n"
        f'cd / && exec runuser -u {SERVER_SYSTEM_USER} -- "{pg_ctl}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(wrapper)


@contextmanager
def local_server(*, pg_cron: bool, name: str, password: str | None = None) -> Iterator[Server]:
    """Start a throwaway cluster on 127.0.0.1; remove it afterwards.

    Without ``password`` every connection is trusted; with it, TCP connections
    must give it (scram-sha-256, as on CNPG), so wrong credentials can be tested.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"trace-summaries-{name}-"))
    chown_to_server_user(workdir)
    options = ["-c max_connections=200", "-c fsync=off", "-c synchronous_commit=off"]
    if pg_cron:
        options += [f"-c {key}={value}" for key, value in PG_CRON_SETTINGS.items()]
    port = port_for.select_random()
    executor = PostgreSQLExecutor(
        executable=_pg_ctl_for_this_user(workdir),
        host="127.0.0.1",
        port=port,
        datadir=str(workdir / "data"),
        unixsocketdir=str(workdir),
        logfile=str(workdir / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
        user=SUPERUSER,
        postgres_options=" ".join(options),
    )
    executor.start()
    if password:
        _require_password(executor, password)
    server = Server(
        host="127.0.0.1",
        port=port,
        password=password,
        has_pg_cron=pg_cron,
        cron_database=CRON_DATABASE if pg_cron else None,
        executor=executor,
    )
    try:
        if pg_cron:
            # As CNPG's bootstrap does: the database pg_cron lives in, with the extension.
            server.janitor(CRON_DATABASE).init()
            with server.connect(CRON_DATABASE, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        yield server
    finally:
        executor.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _require_password(executor: PostgreSQLExecutor, password: str) -> None:
    """Give the superuser a password and make TCP connections use SCRAM."""
    with psycopg.connect(
        host=executor.host, port=executor.port, user=SUPERUSER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(password)
            )
        )
        hba = Path(executor.datadir) / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        conn.execute("SELECT pg_reload_conf()")


def external_server(url: str) -> Server:
    """The server named by TEST_DATABASE_URL, with what it offers."""
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    server = Server(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or SUPERUSER,
        password=parts.password,
    )
    maintenance = parts.path.lstrip("/") or "postgres"
    with psycopg.connect(server.url(maintenance), autocommit=True) as conn:
        preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
        cron_db = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]
    if "pg_cron" in preload and cron_db:
        server.has_pg_cron = True
        server.cron_database = cron_db
        with psycopg.connect(server.url(cron_db), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    return server
