"""Login roles like CNPG's `app`: no superuser, owning what they migrate."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ROLE_PASSWORD = "app-password"


@contextmanager
def login_role(
    server, prefix: str = "app", *, databases: tuple[str, ...] = (), name: str | None = None
) -> Iterator[str]:
    """A new NOSUPERUSER login role with ROLE_PASSWORD; dropped (with what it owns) afterwards.

    ``databases``: where it may own objects besides ``postgres`` (dropped there too).
    ``name``: the role's name (the same role on two servers); ``prefix_<random>`` by default.
    """
    name = name or f"{prefix}_{uuid.uuid4().hex[:8]}"
    with server.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(ROLE_PASSWORD)
            )
        )
    try:
        yield name
    finally:
        for dbname in (*databases, "postgres"):
            with (
                contextlib.suppress(psycopg.OperationalError),
                server.connect(dbname, autocommit=True) as conn,
            ):
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        with server.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def grant(server, dbname: str, statement: str, *roles: str) -> None:
    """Run ``statement`` (with {} for each role) as the superuser in ``dbname``."""
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(*(sql.Identifier(role) for role in roles)))
