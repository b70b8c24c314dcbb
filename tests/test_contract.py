"""The contract: names users' databases hold, and the rule that names the pg_cron job.

Every value here already exists in deployed databases once released, so a
change must come with a revision that moves the old object; these tests fail
on any change, on purpose.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from cnpg_trace_summaries import contract
from tests.support.cron import jobs_named
from tests.support.database import schema_in

LONG_A = "s" * 55 + "aaaaa"  # 60 characters, the first 55 shared with LONG_B
LONG_B = "s" * 55 + "aaaab"
ACCENTED = "é" * 31  # 62 bytes
JAPANESE = "日本" * 10  # 60 bytes

# (database, schema) -> the job's name. Pinned: a change of the rule needs a revision.
PINNED = {
    ("app", "public"): "otel_trace_summaries:app.public",
    ("app", "x" * 38): "otel_trace_summaries:app." + "x" * 38,
    ("app", "x" * 39): "otel_trace_summaries:app." + "x" * 27 + "~17bb3f1610",
    ("app", LONG_A): "otel_trace_summaries:app." + "s" * 27 + "~934db02340",
    ("app", LONG_B): "otel_trace_summaries:app." + "s" * 27 + "~e91000df54",
    ("app", ACCENTED): "otel_trace_summaries:app." + "é" * 13 + "~64d5d42d50",
    ("app", JAPANESE): "otel_trace_summaries:app." + "日本" * 4 + "日~ee1f44cf10",
    ("a.b", "c"): "otel_trace_summaries:a.b.c~79d85b746f",
    ("a", "b.c"): "otel_trace_summaries:a.b.c",
}

# Pairs a naive rule (cut at 63 bytes, or join with '.') would give one job.
TRICKY = [
    *PINNED,
    ("app", "x" * 27 + "~17bb3f1610"),  # looks like the hashed name of ("app", "x" * 39)
    ("app", "é" * 30 + "a"),
    ("app", "é" * 30 + "b"),
    ("a" * 63, "public"),
    ("a" * 63, "public2"),
    ("日本" * 10 + "データ", ACCENTED),
    ("日本" * 10 + "データベース", ACCENTED),
]


@pytest.fixture
def conn(server):
    with server.connect() as connection:
        yield connection


def test_frozen_names_intervals_and_lock_classes_do_not_change():
    assert contract.VERSION_TABLE == "cnpg_trace_summaries_version"
    assert contract.TRACES_TABLE == "otel_traces"
    assert contract.SUMMARIES == "otel_trace_summaries"
    assert contract.SUMMARY_INDEXES == (
        "idx_trace_summaries_trace_id",
        "idx_trace_summaries_timestamp",
        "idx_trace_summaries_service_timestamp",
    )
    assert contract.UNIQUE_SUMMARY_INDEX == "idx_trace_summaries_trace_id"
    assert [name for name, _, _ in contract.TRACE_INDEXES_FOR_SUMMARIES] == [
        "idx_otel_traces_trace_id",
        "idx_otel_traces_timestamp",
    ]
    assert contract.CREATED_MARKER == "created by cnpg-trace-summaries"
    assert contract.REFRESH_SCHEDULE == "*/2 * * * *"
    assert contract.REFRESH_INTERVAL_SECONDS == 120
    assert contract.WINDOW == "7 days"
    assert (contract.MIGRATION_LOCK_CLASS, contract.REFRESH_LOCK_CLASS) == (7_362_001, 7_362_002)


def test_job_name_is_readable_for_common_names(conn):
    assert contract.job_name(conn, "app", "public") == "otel_trace_summaries:app.public"
    assert (
        contract.job_name(conn, "trace_summaries_cron", "tenant_42")
        == "otel_trace_summaries:trace_summaries_cron.tenant_42"
    )


def test_job_name_is_stable(conn):
    assert {key: contract.job_name(conn, *key) for key in PINNED} == PINNED


@pytest.mark.parametrize(("database", "schema"), TRICKY)
def test_job_name_fits_pg_crons_63_byte_name_whole(conn, database, schema):
    name = contract.job_name(conn, database, schema)
    assert len(name.encode()) <= 63
    # jobname is a `name`: the server must not cut it again.
    assert conn.execute("SELECT %s::text::name::text", (name,)).fetchone()[0] == name


def test_job_name_is_distinct_for_long_and_non_ascii_names_that_share_a_prefix(conn):
    names = [contract.job_name(conn, database, schema) for database, schema in TRICKY]
    assert len(set(names)) == len(TRICKY)


def test_job_name_is_the_same_rule_in_sql_and_in_python(conn):
    """The revisions compute it with job_name_sql() over current_database()/current_schema()."""
    conn.execute(f'CREATE SCHEMA "{ACCENTED}"')
    conn.execute(f'SET search_path = "{ACCENTED}"')
    here = conn.execute(f"SELECT {contract.job_name_sql()}").fetchone()[0]
    assert here == contract.job_name(conn, conn.info.dbname, ACCENTED)
    conn.rollback()


def test_long_and_non_ascii_schemas_get_their_own_job_and_each_downgrade_removes_only_its_own(
    cron_server,
):
    names = [LONG_A, LONG_B, ACCENTED, "é" * 30 + "a", JAPANESE]
    with ExitStack() as stack:
        schemas = [
            stack.enter_context(schema_in(cron_server, cron_server.cron_database, name=name))
            for name in names
        ]
        for schema in schemas:
            schema.migrate("upgrade", "head")
        jobs = [schema.job_name for schema in schemas]
        assert len(set(jobs)) == len(jobs)
        assert jobs_named(schemas[0], *jobs) == dict.fromkeys(jobs, 1)
        commands = dict(
            schemas[0].rows(
                "SELECT jobname, command FROM cron.job WHERE jobname = ANY(%s)", (jobs,)
            )
        )
        for schema, job in zip(schemas, jobs, strict=True):
            assert schema.schema in commands[job]

        for index, schema in enumerate(schemas):
            schema.migrate("downgrade", "-1")
            assert jobs_named(schema, *jobs) == {
                job: 0 if position <= index else 1 for position, job in enumerate(jobs)
            }
