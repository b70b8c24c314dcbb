"""Schemas with names chosen by the test (long, non-ASCII), and the pg_cron jobs in them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql

from cnpg_trace_summaries import contract
from tests.support.database import Database


@contextmanager
def named_schema(server, dbname: str, name: str) -> Iterator[Database]:
    """Schema ``name`` in ``dbname`` (first on the search_path); dropped with its job afterwards."""
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        job = contract.job_name(conn, dbname, name)
    try:
        yield Database(server, dbname, name)
    finally:
        with server.connect(dbname, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('cron.job')").fetchone()[0]:
                conn.execute("DELETE FROM cron.job WHERE jobname = %s", (job,))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def jobs_named(database: Database, *names: str) -> dict[str, int]:
    """How many pg_cron jobs carry each name (``database`` is where pg_cron lives)."""
    with database.connect() as conn:
        return {
            name: conn.execute(
                "SELECT count(*) FROM cron.job WHERE jobname = %s", (name,)
            ).fetchone()[0]
            for name in names
        }
