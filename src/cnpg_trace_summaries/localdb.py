"""The local PostgreSQL cluster that ``make run`` starts and reuses.

It lives under ``.local/`` in the checkout and is set up the way the
migrations expect a CNPG cluster with pg_cron to be: pg_cron preloaded,
``cron.database_name`` = the app database, ``cron.use_background_workers = on``,
password (SCRAM) authentication on 127.0.0.1 only.

initdb and postgres refuse to run as root, so when this process is root the
server programs run as the ``postgres`` system user (``runuser``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

APP_DATABASE = "app"
SUPERUSER = "postgres"
DEFAULT_PORT = 55432
SERVER_SYSTEM_USER = "postgres"


class LocalClusterError(Exception):
    """The local cluster cannot be created or started; the message says why."""


def installed_majors() -> list[int]:
    """PostgreSQL server major versions installed the Debian way, newest first."""
    root = Path("/usr/lib/postgresql")
    majors = [
        int(p.name)
        for p in root.glob("*")
        if p.name.isdigit() and (p / "bin" / "postgres").exists()
    ]
    return sorted(majors, reverse=True)


def server_bindir() -> Path:
    """``PG_BINDIR`` if set, else the newest installed server's bin directory."""
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    majors = installed_majors()
    if not majors:
        raise LocalClusterError(
            "no PostgreSQL server is installed; run: "
            "sudo apt-get install -y postgresql && "
            "sudo apt-get install -y postgresql-$(ls /usr/lib/postgresql | sort -n | tail -1)-cron"
        )
    return Path("/usr/lib/postgresql") / str(majors[0]) / "bin"


def major_of(bindir: Path) -> str:
    return bindir.parent.name


def pg_cron_available(bindir: Path) -> bool:
    """True when pg_cron's library and control file are installed for this server."""
    major = major_of(bindir)
    library = bindir.parent / "lib" / "pg_cron.so"
    control = Path("/usr/share/postgresql") / major / "extension" / "pg_cron.control"
    return library.exists() and control.exists()


def as_server_user(argv: list[str]) -> list[str]:
    """Run server programs as ``postgres`` when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_SYSTEM_USER, "--", *argv]
    return argv


def server_user_can_use(path: Path) -> bool:
    """Can the server's system user reach and write ``path``?"""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        ["runuser", "-u", SERVER_SYSTEM_USER, "--", "test", "-w", str(path)],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=SERVER_SYSTEM_USER, group=SERVER_SYSTEM_USER)


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise LocalClusterError("no free TCP port on 127.0.0.1")


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

    @property
    def datadir(self) -> Path:
        return Path(self.state().cluster_dir) / "data"

    @property
    def logfile(self) -> Path:
        return Path(self.state().cluster_dir) / "postgresql.log"

    def url(self, database: str = APP_DATABASE) -> str:
        st = self.state()
        return f"postgresql+psycopg://{SUPERUSER}:{st.password}@127.0.0.1:{st.port}/{database}"

    def libpq_url(self, database: str = APP_DATABASE) -> str:
        return self.url(database).replace("postgresql+psycopg://", "postgresql://")

    # -- lifecycle --------------------------------------------------------
    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        bindir = Path(self.state().bindir)
        argv = as_server_user([str(bindir / "pg_ctl"), "-D", str(self.datadir), *args])
        # cwd=/ : the server user may not be allowed into the caller's directory.
        return subprocess.run(argv, capture_output=True, text=True, check=check, cwd="/")

    def is_running(self) -> bool:
        return self.is_initialised() and self._pg_ctl("status", check=False).returncode == 0

    def create(self) -> None:
        """initdb a new cluster with pg_cron preloaded (once)."""
        bindir = server_bindir()
        if not pg_cron_available(bindir):
            major = major_of(bindir)
            raise LocalClusterError(
                f"pg_cron is not installed for PostgreSQL {major}; run: "
                f"sudo apt-get install -y postgresql-{major}-cron"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cluster_dir = self._choose_cluster_dir()
        state = ClusterState(
            cluster_dir=str(cluster_dir),
            port=free_port(int(os.environ.get("LOCAL_PG_PORT", DEFAULT_PORT))),
            password=secrets.token_urlsafe(18),
            bindir=str(bindir),
        )
        (cluster_dir / "run").mkdir(exist_ok=True)
        chown_to_server_user(cluster_dir / "run")
        with tempfile.NamedTemporaryFile("w", dir=cluster_dir, delete=False) as pwfile:
            pwfile.write(state.password)
        chown_to_server_user(Path(pwfile.name))
        try:
            initdb = as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(cluster_dir / "data"),
                    "-U",
                    SUPERUSER,
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
            result = subprocess.run(initdb, capture_output=True, text=True, cwd="/", check=False)
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise LocalClusterError(f"initdb failed: {result.stderr.strip()}")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(state.port),
            "unix_socket_directories": f"'{cluster_dir / 'run'}'",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{APP_DATABASE}'",
            "cron.use_background_workers": "on",
            "max_worker_processes": "16",
        }
        conf = cluster_dir / "data" / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# cnpg-trace-summaries local cluster (see localdb.py)\n")
            handle.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        self.state_file.chmod(0o600)
        log.info("created a PostgreSQL %s cluster in %s", major_of(bindir), cluster_dir)

    def _choose_cluster_dir(self) -> Path:
        """``.local/postgres`` when the server user can reach it, else /var/tmp.

        A checkout under /root is not reachable by the ``postgres`` user; the
        cluster then lives in /var/tmp under a name derived from the checkout.
        """
        preferred = self.state_dir / "postgres"
        preferred.mkdir(exist_ok=True)
        chown_to_server_user(preferred)
        if server_user_can_use(preferred):
            return preferred
        preferred.rmdir()
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"cnpg-trace-summaries-{digest}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        chown_to_server_user(fallback)
        log.info("the postgres user cannot reach %s; the cluster lives in %s", preferred, fallback)
        return fallback

    def start(self) -> None:
        """Create the cluster if needed, start it if stopped, ensure the app database."""
        if not self.is_initialised():
            self.create()
        if not self.is_running():
            result = self._pg_ctl("-l", str(self.logfile), "-w", "-t", "60", "start", check=False)
            if result.returncode != 0:
                tail = (
                    self.logfile.read_text().strip().splitlines()[-5:]
                    if self.logfile.exists()
                    else []
                )
                raise LocalClusterError(
                    "the local cluster did not start: "
                    + " | ".join([result.stderr.strip(), *tail]).strip(" |")
                )
        self._ensure_app_database()

    def _ensure_app_database(self) -> None:
        with psycopg.connect(self.libpq_url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{APP_DATABASE}"')

    def stop(self) -> bool:
        """Stop the cluster; False when it was not running."""
        if not self.is_running():
            return False
        self._pg_ctl("-m", "fast", "-w", "stop")
        return True
