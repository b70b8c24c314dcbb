"""The two kinds of otel_traces that suites run on: a plain table, and a TimescaleDB
hypertable (revision 1 makes one wherever the extension is in the database)."""

from __future__ import annotations

from tests.support.servers import ServerPool, labels

PLAIN, HYPERTABLE = "plain", "hypertable"
STORES = (PLAIN, HYPERTABLE)


def store_params() -> list[tuple[str, str]]:
    """(store, server label) for every store on every major version, for ``params=``."""
    return [(store, label) for label in labels() for store in STORES]


def store_id(param: tuple[str, str]) -> str:
    return "-".join(param)


def server_for(pool: ServerPool, store: str, label: str):
    """The server a store needs: one with TimescaleDB preloaded for a hypertable."""
    return pool.timescaledb(label) if store == HYPERTABLE else pool.plain(label)


def prepare(server, dbname: str, store: str) -> None:
    """Make ``dbname`` ready for the store: the timescaledb extension, created by the
    superuser (it is not a trusted extension), for a hypertable."""
    if store == HYPERTABLE:
        with server.connect(dbname, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
