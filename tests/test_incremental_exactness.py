"""The incremental mode is exact: after any sequence of changes and a refresh, it is its definition.

Hypothesis draws sequences of steps: new spans (COPY or INSERT), late spans
for traces already summarized, updates (of any column, including trace_id,
and timestamps moved across the 7-day boundary), deletes, spans a second
or so inside the boundary followed by a pause that lets them leave the
window, and full rebuilds in several ranges. Every step is followed by
``CALL otel_trace_summaries_refresh()``, and then, at one snapshot, the table
must equal

* the definition at the table's own window boundary
  (``window_query(boundary) EXCEPT ALL table`` and the reverse: 0 and 0), and
* tests/reference.py's ``summarize()`` of the spans the test wrote, at
  ``now`` = that boundary + 7 days,

with no key left pending. The database sorts text in ICU's en-US order where
the server has ICU ('a' < 'B'), so that a full rebuild's trace_id ranges
are cut in an order that is not byte order.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cnpg_trace_summaries.contract import TRACES_TABLE
from tests.reference import Span, summarize
from tests.support.database import Database, new_database
from tests.support.incremental import compare, configure, copy_spans, install, refresh
from tests.support.spans import SPAN_FIELDS, span_columns, trace_ids
from tests.support.stores import prepare, server_for, store_id, store_params

# About 15 s per major version; INCREMENTAL_EXAMPLES=400 for a long hunt.
EXAMPLES = int(os.environ.get("INCREMENTAL_EXAMPLES", 30))
MAX_WAIT_MS_PER_EXAMPLE = 1_500
DAY_MS = 86_400_000
WINDOW_MS = 7 * DAY_MS


ICU_EN_US = {"template": "template0", "encoding": "UTF8", "locale_provider": "icu",
             "icu_locale": "en-US", "locale": "C.UTF-8"}  # fmt: skip


@pytest.fixture(params=store_params(), ids=store_id)
def exact_db(request, server_pool) -> Iterator[Database]:
    """A database in incremental mode, in ICU's en-US order where the server's build has ICU;
    otel_traces a plain table, or a hypertable."""
    store, label = request.param
    server = server_for(server_pool, store, label)
    with contextlib.ExitStack() as stack:
        try:
            database = stack.enter_context(new_database(server, "exact", **ICU_EN_US))
        except psycopg.errors.FeatureNotSupported:  # "ICU is not supported in this build"
            database = stack.enter_context(new_database(server, "exact"))
        prepare(server, database.dbname, store)
        install(database)
        yield database


# -- steps -------------------------------------------------------------------------------
# Ages in milliseconds: well inside the window, older than it, or just inside its
# boundary (those leave the window within a second or two).
EDGE_MS = st.integers(min_value=20, max_value=600)
WAIT_MS = st.integers(min_value=200, max_value=1_200)
ages = st.one_of(
    EDGE_MS.map(lambda ms: WINDOW_MS - ms),
    st.integers(min_value=0, max_value=WINDOW_MS - 60_000),
    st.integers(min_value=WINDOW_MS + 60_000, max_value=10 * DAY_MS),
).map(lambda ms: timedelta(milliseconds=ms))

# A trace: a new trace_id, or (an index into) the traces written so far.
traces = st.one_of(
    st.tuples(st.just("new"), trace_ids), st.tuples(st.just("existing"), st.integers(0, 99))
)

new_spans = st.lists(
    st.fixed_dictionaries({"age": ages, "trace": traces, "columns": span_columns()}),
    min_size=1,
    max_size=12,
)


@st.composite
def changes(draw) -> dict:
    """What an UPDATE sets: any of trace_id, the timestamp, and the other columns."""
    changed = {}
    if draw(st.booleans()):
        changed["trace"] = draw(traces)
    if draw(st.booleans()):
        changed["age"] = draw(ages)
    columns = draw(span_columns())
    keep = draw(st.sets(st.sampled_from(sorted(columns)), max_size=3))
    changed["columns"] = {name: columns[name] for name in keep if name != "span_id"}
    return changed


scopes = st.sampled_from(["span", "trace"])
steps = st.one_of(
    st.tuples(st.just("insert"), new_spans, st.sampled_from(["copy", "insert"])),
    st.tuples(st.just("update"), st.integers(0, 999), scopes, changes()),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 999), min_size=1, max_size=3), scopes),
    st.tuples(st.just("wait"), WAIT_MS),
    st.tuples(st.just("full"), st.integers(1, 6)),
)


# -- the model: what the test wrote ------------------------------------------------------------
KEYS_IN = (
    '("timestamp", trace_id, span_id) IN (SELECT * FROM unnest('
    "CAST(%s AS timestamptz[]), CAST(%s AS text[]), CAST(%s AS text[])))"
)


def key(span: Span) -> tuple:
    return (span.timestamp, span.trace_id, span.span_id)


@dataclass
class Model:
    """The spans in otel_traces, as the test wrote them; the reference summarizes these."""

    conn: psycopg.Connection
    spans: dict[tuple, Span] = field(default_factory=dict)
    boundary: datetime | None = None
    waited_ms: int = 0

    def now(self) -> datetime:
        return self.conn.execute("SELECT now()").fetchone()[0]

    def trace(self, choice: tuple) -> str:
        kind, value = choice
        if kind == "existing" and self.spans:
            known = sorted({s.trace_id for s in self.spans.values()})
            return known[value % len(known)]
        return value if kind == "new" else f"fresh-{value}"

    def pick(self, index: int) -> Span | None:
        if not self.spans:
            return None
        return self.spans[sorted(self.spans)[index % len(self.spans)]]

    # Each step writes in one statement (its own transaction), as a collector would.
    def insert(self, drawn: list[dict], how: str) -> None:
        now = self.now()
        added: dict[tuple, Span] = {}
        for fields in drawn:
            span = Span(timestamp=now - fields["age"], trace_id=self.trace(fields["trace"]),
                        **fields["columns"])  # fmt: skip
            if key(span) not in self.spans:
                added.setdefault(key(span), span)
        spans = list(added.values())
        if how == "copy":
            copy_spans(self.conn, spans)
        else:
            self.write(spans)
        self.spans.update(added)

    def write(self, spans: list[Span]) -> None:
        """INSERT statements, one per span."""
        columns = ", ".join(f'"{name}"' for name in SPAN_FIELDS)
        placeholders = ", ".join(["%s"] * len(SPAN_FIELDS))
        with self.conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TRACES_TABLE} ({columns}) VALUES ({placeholders})",
                [[getattr(s, name) for name in SPAN_FIELDS] for s in spans],
            )

    def update(self, index: int, scope: str, changed: dict) -> None:
        picked = self.pick(index)
        if picked is None:
            return
        targets = [s for s in self.spans.values() if s.trace_id == picked.trace_id]
        targets = targets if scope == "trace" else [picked]
        values = dict(changed["columns"])
        if "trace" in changed:
            values["trace_id"] = self.trace(changed["trace"])
        if "age" in changed:
            values["timestamp"] = self.now() - changed["age"]
        if not values:
            return
        updated = {key(s): replace(s, **values) for s in targets}
        others = {k: s for k, s in self.spans.items() if k not in updated}
        if len({key(s) for s in updated.values()}) < len(updated) or any(
            key(s) in others for s in updated.values()
        ):
            return  # the primary key would collide: not a write a collector makes
        assignments = ", ".join(f'"{name}" = %s' for name in values)
        old_keys = list(map(list, zip(*updated, strict=True)))
        try:
            self.conn.execute(
                f"UPDATE {TRACES_TABLE} SET {assignments} WHERE {KEYS_IN}",
                [*values.values(), *old_keys],
            )
        except psycopg.errors.CheckViolation:
            # A hypertable moves no row into another chunk: its users delete and insert.
            with self.conn.transaction():
                self.conn.execute(f"DELETE FROM {TRACES_TABLE} WHERE {KEYS_IN}", old_keys)
                self.write(list(updated.values()))
            event("a span moved to another chunk, as DELETE and INSERT")
        self.spans = others | {key(s): s for s in updated.values()}

    def delete(self, indexes: list[int], scope: str) -> None:
        picked = [s for s in (self.pick(i) for i in indexes) if s is not None]
        if scope == "trace":
            ids = {s.trace_id for s in picked}
            picked = [s for s in self.spans.values() if s.trace_id in ids]
        gone = {key(s) for s in picked}
        if not gone:
            return
        self.conn.execute(
            f"DELETE FROM {TRACES_TABLE} WHERE {KEYS_IN}",
            list(map(list, zip(*gone, strict=True))),
        )
        self.spans = {k: s for k, s in self.spans.items() if k not in gone}

    def run(self, step: tuple) -> dict:
        """Apply one step, then refresh; the refresh's outcome."""
        kind, *args = step
        if kind == "insert":
            self.insert(*args)
        elif kind == "update":
            self.update(*args)
        elif kind == "delete":
            self.delete(*args)
        elif kind == "wait":  # spans just inside the boundary leave the window
            pause = min(args[0], MAX_WAIT_MS_PER_EXAMPLE - self.waited_ms)
            self.waited_ms += pause
            time.sleep(pause / 1000)
        elif kind == "full":
            configure(self.conn, rows_per_rebuild_range=args[0])
            return refresh(self.conn, full=True)
        return refresh(self.conn)

    def check(self, step: tuple) -> None:
        result = compare(self.conn)
        assert (result.missing, result.unexpected) == (0, 0), (step, result.describe())
        assert (result.pending, result.rebuild_requested) == (0, None), result.describe()
        assert sorted(map(key, result.spans)) == sorted(self.spans)
        assert result.rows == summarize(list(self.spans.values()), result.now), step
        if self.boundary is not None and any(
            self.boundary < s.timestamp <= result.boundary and s.trace_id
            for s in self.spans.values()
        ):
            event("a span left the window between two refreshes")
        self.boundary = result.boundary


@pytest.fixture
def exact_conn(exact_db: Database) -> Iterator[psycopg.Connection]:
    with exact_db.connect(autocommit=True) as conn:
        yield conn


def start_empty(conn: psycopg.Connection) -> None:
    conn.execute(f"TRUNCATE {TRACES_TABLE}")
    configure(conn, rows_per_rebuild_range=None)
    assert refresh(conn)["kind"] == "full"  # the TRUNCATE asked for one


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(first=new_spans, sequence=st.lists(steps, min_size=1, max_size=6))
def test_after_every_change_and_refresh_the_table_is_its_definition(exact_conn, first, sequence):
    start_empty(exact_conn)
    model = Model(exact_conn)
    for step in [("insert", first, "copy"), *sequence]:
        outcome = model.run(step)
        assert outcome["refreshed"], outcome
        event(f"{step[0]}: {outcome['kind']} refresh" + (
            f" in {min(outcome['ranges'], 3)}{'+' if outcome['ranges'] > 3 else ''} range(s)"
            if outcome["kind"] == "full" else ""))  # fmt: skip
        model.check(step)
