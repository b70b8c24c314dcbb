"""Logical replication into a database whose summaries are incremental.

A subscriber's apply worker (and its initial table synchronization) runs with
``session_replication_role = replica``: it fires no statement-level trigger,
only row-level ones enabled REPLICA or ALWAYS. The incremental mode captures
with row-level triggers enabled REPLICA there, so a subscriber's summaries stay
exact; status says so when they cannot fire, and when a subscription copies
this project's own tables (a publication FOR ALL TABLES).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cnpg_trace_summaries.contract import CAPTURE_ROW_TRIGGERS
from tests.support.commands import run_cli
from tests.support.database import Database
from tests.support.incremental import assert_exact, refresh, traces_sql
from tests.support.revisions import FIRST
from tests.support.servers import fresh_database, local_server, plain_installations

LOGICAL = {"wal_level": "logical", "max_wal_senders": "10", "max_replication_slots": "10"}


@pytest.fixture(scope="module", params=[install.label for install in plain_installations()])
def publisher_server(request):
    install = next(i for i in plain_installations() if i.label == request.param)
    with local_server(f"publisher-{request.param}", install, settings=LOGICAL) as cluster:
        yield cluster


@contextmanager
def subscription(publisher: Database, subscriber: Database, name: str) -> Iterator[None]:
    """``subscriber`` subscribed to ``publisher``'s publication ``name`` (a slot made for it)."""
    slot = f"slot_{subscriber.dbname}"
    publisher.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    subscriber.execute(
        f"CREATE SUBSCRIPTION {name} CONNECTION '{publisher.url.split('?')[0]}' "
        f"PUBLICATION {name} WITH (slot_name = '{slot}', create_slot = false)"
    )
    try:
        yield
    finally:
        subscriber.execute(f"ALTER SUBSCRIPTION {name} DISABLE")
        subscriber.execute(f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE)")
        subscriber.execute(f"DROP SUBSCRIPTION {name}")
        publisher.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


@contextmanager
def two_databases(server) -> Iterator[tuple[Database, Database]]:
    with fresh_database(server, "pub") as pub, fresh_database(server, "sub") as sub:
        yield Database(server, pub), Database(server, sub)


@pytest.fixture
def replicated(publisher_server) -> Iterator[tuple[Database, Database]]:
    """A publisher's otel_traces (revision 1, with spans) and an incremental subscriber."""
    with two_databases(publisher_server) as (publisher, subscriber):
        publisher.migrate("upgrade", FIRST)
        publisher.execute(traces_sql("before", 200))
        publisher.execute("CREATE PUBLICATION traces FOR TABLE otel_traces")
        subscriber.migrate("upgrade", "head", x={"summaries": "incremental"})
        with subscription(publisher, subscriber, "traces"):
            yield publisher, subscriber


def caught_up(publisher: Database, subscriber: Database) -> None:
    """Wait until the subscriber holds exactly the publisher's spans."""
    query = "SELECT count(*), sum(hashtext(concat(trace_id, span_id, name))) FROM otel_traces"
    deadline = time.monotonic() + 60
    while subscriber.rows(query) != publisher.rows(query):
        assert time.monotonic() < deadline, "the subscriber did not catch up in a minute"
        time.sleep(0.1)


def test_a_subscribers_summaries_stay_exact_through_the_copy_and_every_replicated_write(
    replicated,
):
    publisher, subscriber = replicated
    caught_up(publisher, subscriber)  # the initial synchronization, captured row by row
    publisher.execute(traces_sql("after", 50))
    publisher.execute("UPDATE otel_traces SET name = 'renamed' WHERE trace_id < 'before000020'")
    publisher.execute("UPDATE otel_traces SET trace_id = 'amoved' WHERE trace_id = 'before000030'")
    publisher.execute("DELETE FROM otel_traces WHERE trace_id >= 'before000190'")
    caught_up(publisher, subscriber)
    with subscriber.connect(autocommit=True) as conn:
        refresh(conn)
        assert_exact(conn)
        assert conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone() == (239,)
    result = run_cli("status", DATABASE_URL=subscriber.url)
    assert result.returncode == 0, result.stdout


def test_a_subscriber_whose_capture_cannot_fire_is_unhealthy_and_told_what_to_run(replicated):
    publisher, subscriber = replicated
    caught_up(publisher, subscriber)
    name = CAPTURE_ROW_TRIGGERS["INSERT"]
    subscriber.execute(f"ALTER TABLE otel_traces ENABLE TRIGGER {name}")  # origin: never for apply
    result = run_cli("status", "--json", DATABASE_URL=subscriber.url)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(name in p and "trace-summaries repair" in p for p in problems), problems
    assert run_cli("repair", DATABASE_URL=subscriber.url).returncode == 0
    assert run_cli("refresh", "--full", DATABASE_URL=subscriber.url).returncode == 0
    assert run_cli("status", DATABASE_URL=subscriber.url).returncode == 0


def test_a_subscription_that_copies_this_projects_own_tables_is_named_by_status(publisher_server):
    """A publication FOR ALL TABLES from an incremental publisher: its bookkeeping clashes."""
    with two_databases(publisher_server) as (publisher, subscriber):
        for database in (publisher, subscriber):
            database.migrate("upgrade", "head", x={"summaries": "incremental"})
        publisher.execute("CREATE PUBLICATION everything FOR ALL TABLES")
        with subscription(publisher, subscriber, "everything"):
            result = run_cli("status", "--json", DATABASE_URL=subscriber.url)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(
        "subscription everything copies this project's own tables" in p
        and "otel_trace_summaries_state" in p
        for p in problems
    ), problems
