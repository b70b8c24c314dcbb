"""The servers the tests run on: started with cnpg_trace_summaries.dev.servers, or given by URL.

* :func:`local_server` starts a throwaway cluster (from the one template data
  directory per installation) and removes it afterwards.
* :class:`ExternalServer` is the server named by ``TEST_DATABASE_URL``, with
  the same few methods the tests use of a :class:`~servers.Cluster`.
* :class:`ServerPool` keeps the session's servers, by kind and major version
  (:func:`labels`): plain, with pg_cron, with TimescaleDB.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from cnpg_trace_summaries.dev import servers
from cnpg_trace_summaries.sql import cron as cron_sql

CRON_DATABASE = "trace_summaries_cron"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
# The project's own "no skips" switch: .ci/run sets it; a user's CI=true does not.
NO_SKIPS = os.environ.get("TRACE_SUMMARIES_NO_SKIPS", "") == "1"
# Servers with a password authenticate like CNPG (peer on the socket, SCRAM on TCP).
PASSWORD = "s3cret-for-tests"


def plain_installations() -> list[servers.Installation]:
    """One build per major version, newest first: every suite runs on each."""
    by_major: dict[int, servers.Installation] = {}
    for install in servers.installations():
        by_major.setdefault(install.major, install)
    return list(by_major.values())


def labels() -> list[str]:
    """The test ids' server labels, one per major version (pg18, pg15); "external" with a URL."""
    if TEST_DATABASE_URL:
        return ["external"]
    return [install.label for install in plain_installations()]


def cron_labels(*, takes_seconds: bool) -> list[str]:
    """The labels whose pg_cron server runs a pg_cron that does (or does not) take schedules
    in seconds, from the version its installation holds (none with TEST_DATABASE_URL)."""
    found = []
    for label in labels():
        if label == "external":
            continue
        try:
            install = servers.find_installation(major=major(label), pg_cron=True)
        except servers.ServerError:
            continue
        if cron_sql.takes_seconds(install.extension("pg_cron").version) == takes_seconds:
            found.append(label)
    return found


# For a test whose subject is this project's SQL or Python, the same on every major version:
# its ``server`` is the newest one only.
newest_major_only = pytest.mark.parametrize("server", labels()[:1], indirect=True)


def major(label: str) -> int:
    return int(label.removeprefix("pg"))


# Throwaway data directories in memory where there is room: fsync is off anyway, and the
# kernel's writeback of what the suite's servers write cost it about a tenth of its CPU.
MEMORY = Path("/dev/shm")
MEMORY_NEEDED = 8 * 2**30


def data_directory(prefix: str) -> Path:
    """A new directory for a test server's data, owned by the server user: in memory
    (``/dev/shm``) when it has 8 GiB free, else in the temporary directory."""
    in_memory = MEMORY.is_dir() and os.access(MEMORY, os.W_OK)
    if in_memory and shutil.disk_usage(MEMORY).free >= MEMORY_NEEDED:
        return servers.server_user_dir(prefix, MEMORY)
    return servers.server_user_dir(prefix)


# The suite times nothing (the benchmark does, with the server's defaults): no JIT compiling
# the plans of its queries over a million spans, which on PostgreSQL 15 cost more CPU than
# running them.
TEST_SETTINGS = {"jit": "off"}


@contextmanager
def local_server(
    name: str,
    install: servers.Installation,
    *,
    pg_cron_database: str | None = None,
    create_extension: bool = True,
    background_workers: bool = True,
    timescaledb: bool = False,
    password: str | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[servers.Cluster]:
    """A throwaway cluster on 127.0.0.1, started; removed afterwards.

    ``pg_cron_database``: preload pg_cron with that ``cron.database_name``;
    the database is created, and the extension in it unless
    ``create_extension`` is false (as CNPG's bootstrap does).
    ``timescaledb``: preload TimescaleDB (each database creates the extension).
    """
    parts = [servers.THROWAWAY_SETTINGS, TEST_SETTINGS]
    if timescaledb:
        parts.append(servers.timescaledb_settings())
    if pg_cron_database:
        parts.append(
            servers.pg_cron_settings(pg_cron_database, background_workers=background_workers)
        )
    all_settings = servers.combined(*parts, settings or {})
    cluster = servers.Cluster.create(
        install,
        data_directory(f"trace-summaries-{name}-"),
        settings=all_settings,
        password=password,
    )
    try:
        cluster.start()
        if pg_cron_database and pg_cron_database != "postgres":
            cluster.create_database(pg_cron_database)
        if pg_cron_database and create_extension:
            with cluster.connect(pg_cron_database, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        yield cluster
    finally:
        cluster.remove()


@dataclass
class ExternalServer(servers.Endpoint):
    """The server of TEST_DATABASE_URL: the tests create and drop their own databases in it."""

    host: str
    port: int
    user: str
    password: str | None
    cron_database: str | None = None
    preloaded: str = ""

    @property
    def has_pg_cron(self) -> bool:
        return self.cron_database is not None

    @property
    def has_timescaledb(self) -> bool:
        return "timescaledb" in self.preloaded


def external_server(url: str) -> ExternalServer:
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    server = ExternalServer(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        parts.username or servers.SUPERUSER,
        parts.password,
    )
    with server.connect(parts.path.lstrip("/") or "postgres", autocommit=True) as conn:
        server.preloaded = preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        if "pg_cron" in preload:
            server.cron_database = conn.execute("SHOW cron.database_name").fetchone()[0]
    if server.cron_database:
        with server.connect(server.cron_database, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    return server


@contextmanager
def fresh_database(
    server, prefix: str = "t", owner: str | None = None, **options: str
) -> Iterator[str]:
    """A new database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server.create_database(name, owner, **options)
    try:
        yield name
    finally:
        with contextlib.suppress(psycopg.Error):
            server.drop_database(name)


class ServerPool:
    """The session's servers, started on first use and removed at the end, one per kind and label.

    Plain servers (no pg_cron) authenticate like CNPG. The pg_cron server keeps
    ``CRON_DATABASE`` with the extension and trusts connections from this host;
    the TimescaleDB server is one too, with TimescaleDB preloaded as well. A
    major version whose builds lack the extension raises :class:`servers.ServerError`,
    saying what to install.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._servers: dict[tuple[str, str], object] = {}
        self._external = external_server(TEST_DATABASE_URL) if TEST_DATABASE_URL else None

    def _local(self, kind: str, label: str, install: servers.Installation, **options):
        if (kind, label) not in self._servers:
            self._servers[kind, label] = self._stack.enter_context(
                local_server(f"{kind}-{label}", install, **options)
            )
        return self._servers[kind, label]

    def plain(self, label: str):
        if self._external is not None:
            return self._external
        install = next(i for i in plain_installations() if i.label == label)
        return self._local("plain", label, install, password=PASSWORD)

    def cron(self, label: str):
        if self._external is not None:
            if not self._external.has_pg_cron:
                raise servers.ServerError("TEST_DATABASE_URL's server does not preload pg_cron")
            return self._external
        install = servers.find_installation(major=major(label), pg_cron=True)
        return self._local("cron", label, install, pg_cron_database=CRON_DATABASE)

    def timescaledb(self, label: str):
        if self._external is not None:
            if not self._external.has_timescaledb:
                raise servers.ServerError("TEST_DATABASE_URL's server does not preload timescaledb")
            return self._external
        install = servers.find_installation(major=major(label), pg_cron=True, timescaledb=True)
        return self._local(
            "timescaledb", label, install, pg_cron_database=CRON_DATABASE, timescaledb=True
        )

    def close(self) -> None:
        self._stack.close()
