"""The throwaway cluster a benchmark run measures on.

Set up as ``make run``'s local cluster is (:class:`cnpg_trace_summaries.dev.localdb.LocalCluster`):
pg_cron preloaded with ``cron.database_name`` = the app database and background
workers on, SCRAM on 127.0.0.1, PostgreSQL's default settings otherwise (durable:
fsync and synchronous_commit on). Two choices more than ``make run`` offers: the
major version (the newest with pg_cron by default, as ``make run``), and TimescaleDB
preloaded beside pg_cron (``--hypertable``).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from cnpg_trace_summaries.dev import servers
from cnpg_trace_summaries.dev.localdb import APP_DATABASE

log = logging.getLogger(__name__)


@dataclass
class BenchCluster:
    """A started cluster with its app database; :meth:`remove` stops it and deletes it."""

    server: servers.Cluster

    @property
    def url(self) -> str:
        """A libpq URL of the app database, as the superuser."""
        return self.server.url(APP_DATABASE)

    @property
    def postmaster_pid(self) -> int:
        return int((self.server.datadir / "postmaster.pid").read_text().split()[0])

    def extension(self, name: str) -> str | None:
        """The release of ``name`` the installation offers ("1.6.7"), else None."""
        found = self.server.install.extension(name)
        return found.release if found else None

    def remove(self) -> None:
        self.server.remove()


def start(*, major: int | None = None, timescaledb: bool = False) -> BenchCluster:
    """A new cluster of the newest build that has pg_cron (and TimescaleDB, if asked)."""
    install = servers.find_installation(major=major, pg_cron=True, timescaledb=timescaledb)
    settings = servers.pg_cron_settings(APP_DATABASE)
    if timescaledb:
        settings = servers.combined(settings, servers.timescaledb_settings())
    directory = servers.server_user_dir("trace-summaries-bench-")
    server = servers.Cluster.create(
        install,
        directory,
        settings=settings,
        password=secrets.token_urlsafe(18),
        port=servers.free_port(),
    )
    log.info(
        "starting a throwaway PostgreSQL %s cluster in %s (preloaded: %s)",
        install.major,
        directory,
        settings["shared_preload_libraries"],
    )
    server.start()
    server.create_database(APP_DATABASE)
    return BenchCluster(server)
