"""Running the migrations and the console command: in-process, or as a user runs them.

:func:`migrate` runs an alembic command in this process on a connection of
its own (``config.attributes["connection"]``), which is how most tests
migrate: it skips a Python start-up per call. :func:`run_alembic` and
:func:`run_cli` run the command lines, for the tests whose subject is what a
person sees: the output, the exit status, a kill.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from cnpg_trace_summaries.dev import servers
from tests.support import ROOT, forkserver

NOTICES = "cnpg_trace_summaries.notices"


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def alembic_config(x: dict[str, str] | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    config.cmd_opts = argparse.Namespace(x=[f"{key}={value}" for key, value in (x or {}).items()])
    return config


def migrate(url: str, name: str, *args, x: dict[str, str] | None = None, **kwargs) -> str:
    """``alembic <name> <args>`` in-process against ``url``; returns the NOTICEs it logged.

    A failure raises what env.py raises (SystemExit with the one-line message).
    """
    config = alembic_config(x)
    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=pool.NullPool
    )
    captured = Captured()
    logger = logging.getLogger(NOTICES)
    logger.addHandler(captured)
    logger.setLevel(logging.INFO)
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            getattr(command, name)(config, *args, **kwargs)
    finally:
        logger.removeHandler(captured)
        engine.dispose()
    return captured.text


def environment(**overrides: str | None) -> dict[str, str]:
    """This process's environment without the tests' own database settings, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL"}}
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def run_python_module(
    module: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m module args`` from the checkout, as a user would run the command: a
    process of its own, forked from one that imported the runtime once (forkserver)."""
    return forkserver.run_module(module, list(args), env=env, cwd=ROOT, timeout=timeout)


def run_alembic(
    *args: str, database_url: str | None, check: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """The alembic command line (with alembic.ini's logging), as a user runs it."""
    result = run_python_module(
        "alembic",
        "-c",
        str(ROOT / "alembic.ini"),
        *args,
        env=environment(DATABASE_URL=database_url, **env),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"alembic {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``trace-summaries args`` with ``env`` (DATABASE_URL=..., ...) added to the environment."""
    return run_python_module("cnpg_trace_summaries.cli", *args, env=environment(**env))


def switch(database, mode: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """``trace-summaries switch mode [args]`` against ``database`` (a tests.support Database).

    ``check``: fail with its stderr unless it exits 0.
    """
    result = run_cli("switch", mode, *args, DATABASE_URL=database.url)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def assert_one_clear_line(result, *fragments: str, exit_status: int = 1) -> None:
    """The command failed with ``exit_status``, no traceback, and its last line says it all."""
    assert result.returncode == exit_status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in last_line(result), result.stderr


def psql(url: str, *args: str) -> subprocess.CompletedProcess:
    """psql (of the newest installed build) against ``url``; fails on the first error."""
    program = servers.installations()[0].program("psql")
    return subprocess.run(
        [program, "-X", "-v", "ON_ERROR_STOP=1", *args, url],
        capture_output=True,
        text=True,
        check=True,
    )
