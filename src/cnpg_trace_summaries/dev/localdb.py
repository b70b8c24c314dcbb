"""The local PostgreSQL cluster that ``make run`` starts and reuses.

It is a :class:`~cnpg_trace_summaries.dev.servers.Cluster` set up the way the
migrations expect a CNPG cluster with pg_cron to be: pg_cron preloaded,
``cron.database_name`` = the app database, ``cron.use_background_workers =
on``, password (SCRAM) authentication on 127.0.0.1 only. Where it lives, its
port and its password are kept in ``.local/cluster.json`` in the checkout.

The data directory is ``.local/postgres`` when the ``postgres`` user can
reach it (the server runs as that user when this process is root), and a
directory under /var/tmp named after the checkout otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from cnpg_trace_summaries.dev import servers

log = logging.getLogger(__name__)

APP_DATABASE = "app"
DEFAULT_PORT = 55432

LocalClusterError = servers.ServerError


def checkout_dir() -> Path:
    """The project checkout (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "alembic.ini").exists() else Path.cwd()


@dataclass
class ClusterState:
    """What ``.local/cluster.json`` records about the cluster."""

    cluster_dir: str
    port: int
    password: str
    bindir: str
    major: int = 0


class LocalCluster:
    """A single-node development cluster with pg_cron, kept under the checkout."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.state_file = state_dir / "cluster.json"

    @classmethod
    def from_checkout(cls) -> LocalCluster:
        override = os.environ.get("TRACE_SUMMARIES_LOCAL_DIR")
        return cls(Path(override) if override else checkout_dir() / ".local")

    # -- state ------------------------------------------------------------
    def is_initialised(self) -> bool:
        return self.state_file.exists()

    def state(self) -> ClusterState:
        try:
            return ClusterState(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            raise LocalClusterError(
                "the local cluster has not been created yet; run `make run`"
            ) from None

    def cluster(self) -> servers.Cluster:
        st = self.state()
        install = servers.Installation(Path(st.bindir), st.major, "local")
        settings = servers.pg_cron_settings(APP_DATABASE)
        return servers.Cluster(install, Path(st.cluster_dir), st.port, st.password, settings)

    def url(self, database: str = APP_DATABASE) -> str:
        return self.libpq_url(database).replace("postgresql://", "postgresql+psycopg://", 1)

    def libpq_url(self, database: str = APP_DATABASE) -> str:
        return self.cluster().url(database)

    # -- lifecycle --------------------------------------------------------
    def is_running(self) -> bool:
        return self.is_initialised() and self.cluster().is_running()

    def create(self) -> None:
        """A new cluster with pg_cron preloaded (once)."""
        install = servers.find_installation(pg_cron=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        directory = self._choose_cluster_dir()
        cluster = servers.Cluster.create(
            install,
            directory,
            settings=servers.pg_cron_settings(APP_DATABASE),
            password=secrets.token_urlsafe(18),
            port=servers.free_port(int(os.environ.get("LOCAL_PG_PORT", DEFAULT_PORT))),
        )
        state = ClusterState(
            str(directory), cluster.port, cluster.password, str(cluster.install.bindir),
            install.major,
        )  # fmt: skip
        self._save(state)
        log.info("created a PostgreSQL %s cluster in %s", install.major, directory)

    def _choose_cluster_dir(self) -> Path:
        """``.local/postgres`` when the server user can reach it, else /var/tmp.

        A checkout under /root is not reachable by the ``postgres`` user; the
        cluster then lives in /var/tmp under a name derived from the checkout.
        """
        preferred = self.state_dir / "postgres"
        preferred.mkdir(exist_ok=True)
        servers.give_to_server_user(preferred)
        if servers.server_user_can("w", preferred):
            return preferred
        preferred.rmdir()
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"cnpg-trace-summaries-{digest}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        servers.give_to_server_user(fallback)
        log.info("the postgres user cannot reach %s; the cluster lives in %s", preferred, fallback)
        return fallback

    def start(self) -> None:
        """Create the cluster if needed, start it if stopped, ensure the app database."""
        if not self.is_initialised():
            self.create()
        cluster = self.cluster()
        if not cluster.is_running():
            cluster.start()
            state = self.state()
            if cluster.port != state.port:  # the old port was taken
                state.port = cluster.port
                self._save(state)
        with cluster.connect() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
            ).fetchone()
        if not exists:
            cluster.create_database(APP_DATABASE)

    def _save(self, state: ClusterState) -> None:
        """Record ``state``; the file holds the password, so only its owner may read it."""
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        self.state_file.chmod(0o600)

    def stop(self) -> bool:
        """Stop the cluster; False when it was not running."""
        return self.is_initialised() and self.cluster().stop()

    def remove(self) -> None:
        """Stop it and delete its data and state."""
        if self.is_initialised():
            self.cluster().remove()
            self.state_file.unlink()
