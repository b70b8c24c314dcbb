"""At a million: status and the metrics read a few hundred pages; a switch never runs one long
transaction.

One store of a million traces of one span each (a million summary rows), installed in view
mode, checked, switched to incremental with small slices and ranges, checked again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from cnpg_trace_summaries import migrating
from cnpg_trace_summaries.contract import METRICS_FUNCTION
from tests.support.commands import run_cli, switch
from tests.support.database import Database, new_database
from tests.support.incremental import compare
from tests.support.revisions import FIRST
from tests.support.servers import newest_major_only

# A million rows to load and switch, on the newest major version only: what is measured here (pages
# read, transactions of a switch) is this project's SQL, which is the same on every major.
pytestmark = newest_major_only

TRACES = 1_000_000
# A page budget for everything status reads: "a few hundred pages".
PAGES = 300

ONE_SPAN_PER_TRACE_SQL = f"""
INSERT INTO otel_traces ("timestamp", trace_id, span_id, name, service_name, status_code)
SELECT now() - g * interval '500 milliseconds', md5(g::text), 'root', 'GET /', 'svc-' || g % 7, 0
FROM generate_series(1, {TRACES}) AS g
"""

# Pages of the store's own relations (tables, their indexes and TOAST) read or found in
# shared buffers: what a scan would show. (The catalogs a new session reads to plan its
# statements, a few thousand cached pages whatever the store's size, are not counted.)
STORE_PAGES_SQL = """
SELECT sum(coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0)
           + coalesce(idx_blks_read, 0) + coalesce(idx_blks_hit, 0)
           + coalesce(toast_blks_read, 0) + coalesce(toast_blks_hit, 0))
FROM pg_statio_user_tables WHERE schemaname = current_schema()
"""


@pytest.fixture(scope="module")
def million(server) -> Iterator[Database]:
    with new_database(server, "million") as db:
        db.migrate("upgrade", FIRST)
        db.execute(ONE_SPAN_PER_TRACE_SQL)
        db.execute("VACUUM ANALYZE otel_traces")
        db.migrate("upgrade", "head")
        yield db


def pages_read_by(database: Database, *command: str) -> int:
    """The pages of the store's relations read while ``command`` ran, and nothing else."""
    with database.connect(autocommit=True) as conn:
        before = conn.execute(STORE_PAGES_SQL).fetchone()[0]
        result = run_cli(*command, DATABASE_URL=database.url)
        assert result.returncode in (0, 2), result.stderr
        time.sleep(0.6)  # the command's session has ended and flushed its counters
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(STORE_PAGES_SQL).fetchone()[0] - before


def metrics_buffers(database: Database) -> tuple[int, int]:
    """The buffers EXPLAIN (ANALYZE, BUFFERS) shows for the metrics function: on a new
    session's first call (which compiles it and loads its catalogs), then on the next."""
    with database.connect() as conn:
        found = []
        for _ in range(2):
            plan = conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM {METRICS_FUNCTION}()"
            ).fetchone()[0][0]["Plan"]
            found.append(
                sum(plan.get(key, 0) for key in ("Shared Hit Blocks", "Shared Read Blocks"))
            )
    return found[0], found[1]


def test_status_and_the_metrics_read_a_few_hundred_pages_at_a_million_summaries(million, report):
    assert (
        million.scalar("SELECT reltuples FROM pg_class WHERE relname = 'otel_trace_summaries'")
        >= TRACES * 0.9
    )
    status_pages = pages_read_by(million, "status")
    first_call, next_call = metrics_buffers(million)
    report(f"at {TRACES:,} summary rows, view mode: status read {status_pages} pages of the "
           f"store; EXPLAIN BUFFERS of the metrics function: {next_call} (first call of a "
           f"session, catalogs included: {first_call})")  # fmt: skip
    assert status_pages <= PAGES
    assert next_call <= PAGES


class TransactionWatcher:
    """The longest transaction of the switch's session, sampled from pg_stat_activity."""

    SQL = f"""
    SELECT pid, xact_start, extract(epoch FROM clock_timestamp() - xact_start)
    FROM pg_stat_activity
    WHERE datname = %s AND application_name = '{migrating.APPLICATION_NAME}: switch'
      AND xact_start IS NOT NULL
    """

    def __init__(self, database: Database):
        self.database = database
        self.longest: dict[tuple, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def __enter__(self) -> TransactionWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _watch(self) -> None:
        with self.database.connect(autocommit=True) as conn:
            while not self.stop.is_set():
                for pid, started, seconds in conn.execute(self.SQL, (self.database.dbname,)):
                    key = (pid, started)
                    self.longest[key] = max(self.longest.get(key, 0.0), float(seconds))
                time.sleep(0.005)


def test_a_switch_at_a_million_commits_slice_by_slice_and_range_by_range(million, report):
    """No transaction of the switch reads or writes more than one slice or one range: the
    longest one seen in pg_stat_activity lasts no longer than its longest step."""
    slice_spans, range_rows = 100_000, 50_000
    with TransactionWatcher(million) as watcher:
        result = switch(million, "incremental", "--json", "--spans-per-slice", str(slice_spans),
                        "--rows-per-range", str(range_rows))  # fmt: skip
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)["build"]
    slices = [step for step in build["steps"] if step["kind"] == "slice"]
    ranges = [step for step in build["steps"] if step["kind"] == "range"]
    assert len(slices) >= TRACES // slice_spans and len(ranges) >= TRACES // range_rows
    assert max(step["spans"] for step in slices) <= slice_spans
    assert max(step["upserted"] for step in ranges) <= range_rows + 1
    assert sum(step["upserted"] for step in ranges) == TRACES
    longest_step = max(step["seconds"] for step in build["steps"])
    longest = max(watcher.longest.values())
    report(f"switch to incremental over {TRACES:,} spans: {len(slices)} slices, {len(ranges)} "
           f"ranges, longest step {longest_step:.2f}s, longest transaction seen {longest:.2f}s, "
           f"whole build {build['seconds']:.1f}s")  # fmt: skip
    assert longest <= longest_step + 0.5, sorted(watcher.longest.values())[-5:]
    with million.connect(autocommit=True) as conn:
        assert compare(conn, with_rows=False).exact
    incremental_status = pages_read_by(million, "status")
    report(f"at {TRACES:,} summary rows, incremental mode: status read {incremental_status} pages")
    assert incremental_status <= PAGES
