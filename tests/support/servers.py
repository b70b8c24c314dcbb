"""The servers the tests run on: started with cnpg_trace_summaries.servers, or given by URL.

* :func:`local_server` starts a throwaway cluster (from the one template data
  directory per installation) and removes it afterwards.
* :class:`ExternalServer` is the server named by ``TEST_DATABASE_URL``, with
  the same few methods the tests use of a :class:`~servers.Cluster`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg

from cnpg_trace_summaries.dev import servers

CRON_DATABASE = "trace_summaries_cron"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
# The project's own "no skips" switch: .ci/run sets it; a user's CI=true does not.
NO_SKIPS = os.environ.get("TRACE_SUMMARIES_NO_SKIPS", "") == "1"
# Servers with a password authenticate like CNPG (peer on the socket, SCRAM on TCP).
PASSWORD = "s3cret-for-tests"


def plain_installations() -> list[servers.Installation]:
    """One build per major version, newest first: the suites that need no pg_cron run on each."""
    by_major: dict[int, servers.Installation] = {}
    for install in servers.installations():
        by_major.setdefault(install.major, install)
    return list(by_major.values())


def cron_installation() -> servers.Installation:
    return servers.find_installation(pg_cron=True)


@contextmanager
def local_server(
    name: str,
    install: servers.Installation | None = None,
    *,
    pg_cron_database: str | None = None,
    create_extension: bool = True,
    background_workers: bool = True,
    password: str | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[servers.Cluster]:
    """A throwaway cluster on 127.0.0.1, started; removed afterwards.

    ``pg_cron_database``: preload pg_cron with that ``cron.database_name``;
    the database is created, and the extension in it unless
    ``create_extension`` is false (as CNPG's bootstrap does).
    """
    install = install or (cron_installation() if pg_cron_database else plain_installations()[0])
    all_settings = dict(servers.THROWAWAY_SETTINGS) | (settings or {})
    if pg_cron_database:
        all_settings |= servers.pg_cron_settings(
            pg_cron_database, background_workers=background_workers
        )
    cluster = servers.Cluster.create(
        install,
        servers.server_user_dir(f"trace-summaries-{name}-"),
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

    @property
    def has_pg_cron(self) -> bool:
        return self.cron_database is not None


def external_server(url: str) -> ExternalServer:
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    server = ExternalServer(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        parts.username or servers.SUPERUSER,
        parts.password,
    )
    with server.connect(parts.path.lstrip("/") or "postgres", autocommit=True) as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
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
    """The session's servers, started on first use and removed at the end.

    Plain servers (no pg_cron) are keyed by label (pg15, pg18) and authenticate
    like CNPG; the pg_cron server keeps ``CRON_DATABASE`` with the extension
    and trusts connections from this host.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._servers: dict[str, object] = {}
        self._external = external_server(TEST_DATABASE_URL) if TEST_DATABASE_URL else None

    def plain(self, label: str):
        if self._external is not None:
            return self._external
        if label not in self._servers:
            install = next(i for i in plain_installations() if i.label == label)
            self._servers[label] = self._stack.enter_context(
                local_server(f"plain-{label}", install, password=PASSWORD)
            )
        return self._servers[label]

    def cron(self):
        if self._external is not None:
            return self._external if self._external.has_pg_cron else None
        if "cron" not in self._servers:
            self._servers["cron"] = self._stack.enter_context(
                local_server("cron", pg_cron_database=CRON_DATABASE)
            )
        return self._servers["cron"]

    def close(self) -> None:
        self._stack.close()


def plain_labels() -> list[str]:
    if TEST_DATABASE_URL:
        return ["external"]
    return [install.label for install in plain_installations()]


def cron_labels() -> list[str]:
    if TEST_DATABASE_URL:
        return ["external"]
    try:
        return [cron_installation().label]
    except servers.ServerError:
        return ["no-pg_cron-installed"]
