"""A trace store that a collector created and fills, for the adoption tests.

The collector's ``otel_traces`` has the spec's columns but indexes of its
own, none leading with ``trace_id``: adopting it means building
``idx_otel_traces_trace_id`` while spans keep arriving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql

from cnpg_trace_summaries import contract, migrating
from tests.support.database import Database, new_database
from tests.support.roles import ROLE_PASSWORD, login_role

COLLECTOR_INDEXES = ("spans_by_service", "spans_by_time", "spans_pkey")

COLLECTOR_TABLE_SQL = f"""
CREATE TABLE otel_traces (
    {contract.span_columns_ddl(not_null=("timestamp", "trace_id", "span_id"))}
)
"""

# Built after the load: about three times faster than maintaining them row by row.
COLLECTOR_INDEXES_SQL = (
    "ALTER TABLE otel_traces ADD CONSTRAINT spans_pkey "
    'PRIMARY KEY ("timestamp", trace_id, span_id)',
    'CREATE INDEX spans_by_time ON otel_traces ("timestamp")',
    'CREATE INDEX spans_by_service ON otel_traces (service_name, "timestamp")',
)

# {traces} traces of ten spans over the last ~6 days (one every 5 s), every 50th failing.
LOAD_SQL = """
INSERT INTO otel_traces ("timestamp", trace_id, span_id, parent_span_id, name, kind,
    start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message)
SELECT x.ts + s * interval '1 millisecond', x.trace_id, x.trace_id || '.' || s,
       CASE WHEN s = 0 THEN NULL ELSE x.trace_id || '.0' END,
       CASE WHEN s = 0 THEN 'GET /api/' || t % 20 ELSE 'call-' || s END,
       CASE WHEN s = 0 THEN 2 ELSE 3 END,
       x.ns + s * 1000000, x.ns + (20 - s) * 1000000,
       (ARRAY['frontend', 'checkout', 'cart', 'payment', 'shipping'])[1 + (t + s) % 5],
       CASE WHEN t % 50 = 0 AND s = 9 THEN 2 ELSE 0 END, ''
FROM generate_series(1, {traces}) AS t
CROSS JOIN LATERAL (
    SELECT now() - t * interval '5 seconds' AS ts, md5(t::text) AS trace_id,
           CAST(extract(epoch FROM now() - t * interval '5 seconds') * 1e9 AS bigint) AS ns
) AS x
CROSS JOIN generate_series(0, 9) AS s
"""

INDEXES_SQL = """
SELECT c.relname, pg_get_indexdef(c.oid), i.indisvalid, obj_description(c.oid, 'pg_class'), c.oid
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass(format('%I.otel_traces', current_schema()))
ORDER BY c.relname
"""


@contextmanager
def app_database(server, prefix: str = "adopt") -> Iterator[Database]:
    """A new database owned by, and reached as, a non-superuser login role (CNPG's `app`)."""
    with login_role(server) as role, new_database(server, prefix) as database:
        with server.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(database.dbname), sql.Identifier(role)
                )
            )
        yield database.as_role(role, ROLE_PASSWORD)


def create_collector_store(database: Database, traces: int) -> None:
    """The collector's otel_traces in ``database``'s schema, holding ``traces`` * 10 spans."""
    with database.connect(autocommit=True) as conn:
        conn.execute(COLLECTOR_TABLE_SQL)
        conn.execute(LOAD_SQL.format(traces=int(traces)))
        for statement in COLLECTOR_INDEXES_SQL:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE otel_traces")


def indexes(database: Database) -> dict[str, dict]:
    """The indexes of otel_traces: name -> definition, valid, comment, oid."""
    return {
        name: {"definition": definition, "valid": valid, "comment": comment, "oid": oid}
        for name, definition, valid, comment, oid in database.rows(INDEXES_SQL)
    }


def definitions(database: Database, names=COLLECTOR_INDEXES) -> dict[str, str]:
    found = indexes(database)
    return {name: found[name]["definition"] for name in names if name in found}


def is_ours(index: dict) -> bool:
    return (index["comment"] or "").startswith(contract.CREATED_MARKER)


def reset(database: Database) -> None:
    """Back to the collector's store: no summaries, no index or history of this project."""
    with database.connect(autocommit=True) as conn:
        conn.execute(f"DROP MATERIALIZED VIEW IF EXISTS {contract.SUMMARIES}")
        conn.execute(f"DROP TABLE IF EXISTS {contract.VERSION_TABLE}")
        for name in set(indexes(database)) - set(COLLECTOR_INDEXES):
            conn.execute(f"DROP INDEX {name}")


class MigrationWatcher:
    """Records what the running migrations' backends execute, as pg_stat_activity shows it."""

    def __init__(self, database: Database):
        self.database = database
        self.statements: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def __enter__(self) -> MigrationWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _watch(self) -> None:
        with self.database.connect(autocommit=True) as conn:
            while not self.stop.is_set():
                for (query,) in conn.execute(
                    "SELECT query FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = %s AND state = 'active'",
                    (self.database.dbname, migrating.APPLICATION_NAME),
                ):
                    if not self.statements or self.statements[-1] != query:
                        self.statements.append(query)
                time.sleep(0.01)

    def saw(self, statement: str) -> bool:
        """Whether a statement started with ``statement``, or a DO block ran it (format())."""
        return any(
            " ".join(query.split()).startswith(statement)
            or f"EXECUTE format($template${statement}" in query
            for query in self.statements
        )
