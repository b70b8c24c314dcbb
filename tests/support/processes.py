"""The alembic command line as a running process: started, watched from the server, killed.

For the tests whose subject is what happens *while* a migration runs: two
migrators at once, a migrator waiting on a lock, a migrator killed midway.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from cnpg_trace_summaries import migrating
from cnpg_trace_summaries.contract import MIGRATION_LOCK_CLASS, lock_key_sql
from tests.support import ROOT
from tests.support.commands import environment
from tests.support.database import Database

WAIT_SECONDS = 120

# The backend of a running migration (application_name set by env.py).
MIGRATION_BACKEND_SQL = """
SELECT pid, wait_event_type, wait_event, query FROM pg_stat_activity
WHERE datname = %(dbname)s AND application_name = %(application_name)s
"""


def start_alembic(database: Database, *args: str, **env: str) -> subprocess.Popen:
    """``alembic args`` against ``database`` as a user runs it, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        env=environment(DATABASE_URL=database.url, **env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = WAIT_SECONDS) -> subprocess.CompletedProcess:
    """Wait for ``process``; its exit status and output, as subprocess.run gives them."""
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for(
    database: Database,
    query: str,
    params: Any = None,
    *,
    what: str,
    seconds: float = WAIT_SECONDS,
) -> tuple:
    """Poll ``query`` (on a connection of its own) until it returns a row; that row."""
    deadline = time.monotonic() + seconds
    with database.connect(autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(query, params).fetchone()
            if row is not None:
                return row
            time.sleep(0.02)
    raise AssertionError(f"gave up after {seconds}s waiting for {what}")


def migration_backend(database: Database, condition: str = "true") -> tuple:
    """(pid, wait_event_type, wait_event, query) of the running migration, once ``condition``."""
    return wait_for(
        database,
        f"{MIGRATION_BACKEND_SQL} AND ({condition.replace('%', '%%')})",
        {"dbname": database.dbname, "application_name": migrating.APPLICATION_NAME},
        what=f"a migration backend where {condition}",
    )


def waiting_migrations(database: Database, count: int) -> None:
    """Wait until ``count`` migrations of ``database`` wait for the migration lock."""
    wait_for(
        database,
        "SELECT 1 FROM pg_stat_activity WHERE datname = %(dbname)s "
        "AND application_name = %(application_name)s HAVING count(*) = %(count)s",
        {
            "dbname": database.dbname,
            "application_name": migrating.WAITING_APPLICATION_NAME,
            "count": count,
        },
        what=f"{count} migrations waiting for the migration lock",
    )


def wait_until_gone(database: Database, pid: int) -> None:
    wait_for(
        database,
        "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)",
        (pid,),
        what=f"backend {pid} to end",
    )


def hold_migration_lock(database: Database, application_name: str):
    """A connection (use it as a context manager) holding ``database``'s migration lock."""
    conn = database.connect(autocommit=True, application_name=application_name)
    conn.execute(f"SELECT pg_advisory_lock({lock_key_sql(MIGRATION_LOCK_CLASS)})")
    return conn
