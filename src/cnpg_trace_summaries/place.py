"""A place to work: a live connection, its path pinned, and the schema of the summaries.

Every statement of the live commands is a template over ``@schema@``
(:mod:`.sql.render`), run with ``search_path = pg_catalog, pg_temp``, so that
nothing resolves through a schema another role may write to, whichever
schema the summaries are in (the first on the connection's own path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from cnpg_trace_summaries.database import ConfigError
from cnpg_trace_summaries.sql.render import PINNED_PATH, VALUE_PREFIX, for_schema


@dataclass
class Place:
    """A live connection and the schema whose summaries it works on.

    Every statement is a template over ``@schema@`` (:mod:`.sql.render`), run
    with the path pinned to ``pg_catalog, pg_temp``, so that nothing resolves
    through a schema another role may write to.
    """

    conn: psycopg.Connection
    schema: str

    def sql(self, template: str, *, parameters: bool = False) -> str:
        return for_schema(template, self.schema, parameters=parameters)

    def execute(self, template: str, params: Any = None) -> psycopg.Cursor:
        return self.conn.execute(self.sql(template, parameters=params is not None), params)

    def one(self, template: str, params: Any = None) -> Any:
        row = self.execute(template, params).fetchone()
        return None if row is None else row[0]


def schema_of(conn: psycopg.Connection) -> str:
    """The schema a session works in: the first schema on its search_path that exists."""
    schema = conn.execute("SELECT pg_catalog.current_schema()").fetchone()[0]
    if schema is None:
        path = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
        raise ConfigError(f"no schema on search_path ({path}) exists in this database")
    return schema


# The path pinned, and the schema named for the project's DO blocks (:func:`.sql.render.do_block`).
PIN_SQL = (
    f"SELECT pg_catalog.set_config('search_path', '{PINNED_PATH}', false), "
    f"pg_catalog.set_config('{VALUE_PREFIX}schema', %s, false)"
)
UNPIN_SQL = (
    "SELECT pg_catalog.set_config('search_path', %s, false), "
    f"pg_catalog.set_config('{VALUE_PREFIX}schema', '', false)"
)


def place(conn: psycopg.Connection) -> Place:
    """``conn``'s schema, then its path pinned for the rest of the session."""
    schema = schema_of(conn)
    conn.execute(PIN_SQL, (schema,))
    return Place(conn, schema)


@contextlib.contextmanager
def pinned(conn: psycopg.Connection) -> Iterator[Place]:
    """``conn`` (a migration's session, which alembic needs unpinned) pinned for the block."""
    schema = schema_of(conn)
    saved = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    conn.execute(PIN_SQL, (schema,))
    try:
        yield Place(conn, schema)
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute(UNPIN_SQL, (saved,))
