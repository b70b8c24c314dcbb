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

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, urlsplit

import port_for
import psycopg
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from cnpg_trace_summaries.localdb import (
    SERVER_SYSTEM_USER,
    as_server_user,
    chown_to_server_user,
    server_bindir,
)

CRON_DATABASE = "trace_summaries_cron"
SUPERUSER = "postgres"


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
    datadir: Path | None = None

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
def local_server(
    name: str,
    *,
    pg_cron_database: str | None = None,
    create_extension: bool = True,
    background_workers: bool = True,
    password: str | None = None,
) -> Iterator[Server]:
    """Start a throwaway cluster on 127.0.0.1; remove it afterwards.

    ``pg_cron_database``: preload pg_cron with that ``cron.database_name`` (the
    database is created, and the extension in it unless ``create_extension``
    is false). Without ``password`` every connection is trusted; with it the
    cluster authenticates like CNPG (local peer, host scram-sha-256), so wrong
    credentials, and pg_cron jobs that connect over libpq, can be tested.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"trace-summaries-{name}-"))
    chown_to_server_user(workdir)
    settings = {"max_connections": "200", "fsync": "off", "synchronous_commit": "off"}
    if pg_cron_database:
        settings |= {
            "shared_preload_libraries": "pg_cron",
            "cron.database_name": pg_cron_database,
            "cron.use_background_workers": "on" if background_workers else "off",
            "cron.timezone": "UTC",
            "max_worker_processes": "32",
        }
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
        postgres_options=" ".join(f"-c {key}={value}" for key, value in settings.items()),
    )
    executor.start()
    server = Server(
        host="127.0.0.1",
        port=port,
        has_pg_cron=pg_cron_database is not None,
        cron_database=pg_cron_database,
        executor=executor,
        datadir=Path(executor.datadir),
    )
    try:
        if password:
            _authenticate_like_cnpg(executor, password)
            server.password = password
        if pg_cron_database:
            # As CNPG's bootstrap does: the database pg_cron lives in, with the extension.
            if pg_cron_database != "postgres":
                server.janitor(pg_cron_database).init()
            if create_extension:
                with server.connect(pg_cron_database, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # a test may have stopped it
            executor.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _authenticate_like_cnpg(executor: PostgreSQLExecutor, password: str) -> None:
    """Give the superuser a password; pg_hba as CNPG writes it (peer, scram-sha-256)."""
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
        hba.write_text(
            "local all all peer\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
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


@contextmanager
def streaming_standby(primary: Server, name: str = "standby") -> Iterator[Server]:
    """A hot standby of ``primary`` (pg_basebackup -R), with the same settings."""
    assert primary.executor is not None, "a standby needs a local primary"
    workdir = Path(tempfile.mkdtemp(prefix=f"trace-summaries-{name}-"))
    chown_to_server_user(workdir)
    bindir = server_bindir()
    datadir = workdir / "data"
    port = port_for.select_random()
    subprocess.run(
        as_server_user(
            [
                str(bindir / "pg_basebackup"),
                "-h",
                primary.host,
                "-p",
                str(primary.port),
                "-U",
                primary.user,
                "-D",
                str(datadir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        ),
        check=True,
        capture_output=True,
        cwd="/",
    )
    options = primary.executor.postgres_options + " -c hot_standby_feedback=on"
    pg_ctl = as_server_user([str(bindir / "pg_ctl"), "-D", str(datadir)])
    subprocess.run(
        [
            *pg_ctl,
            "-l",
            str(workdir / "postgresql.log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -c unix_socket_directories='{workdir}' {options}",
        ],
        check=True,
        capture_output=True,
        cwd="/",
    )
    standby = replace(primary, port=port, executor=None)
    standby.datadir = datadir
    try:
        yield standby
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "immediate", "stop"], capture_output=True, cwd="/", check=False
        )
        shutil.rmtree(workdir, ignore_errors=True)


def pg_ctl(server_datadir: Path, *args: str) -> None:
    """Run pg_ctl on a data directory (as the server user when root)."""
    subprocess.run(
        as_server_user([str(server_bindir() / "pg_ctl"), "-D", str(server_datadir), *args]),
        check=True,
        capture_output=True,
        cwd="/",
    )
