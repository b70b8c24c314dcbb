"""Hypothesis strategies for span fields, shared by the semantics and the incremental tests.

Values are what PostgreSQL can store (no NUL, no lone surrogates), ASCII
and not, with ids chosen so that byte order and a locale's order disagree
('B' < 'a' in bytes, not in en-US).
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.reference import Span

SPAN_FIELDS = tuple(Span.__dataclass_fields__)

pg_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=6,
)
ids = st.sampled_from(["a", "b", "B", "Z", "é", "ß", "日本", "a1", "0"]) | pg_text
trace_ids = st.sampled_from(["t1", "t2", "", "ü-trace", "T1"]) | pg_text
nanos = st.none() | st.integers(min_value=-(2**62), max_value=2**62)
service_names = st.none() | st.sampled_from(["api", "API", "db", "é", ""]) | pg_text


def span_columns() -> st.SearchStrategy[dict]:
    """Every column of a span but timestamp and trace_id."""
    return st.fixed_dictionaries(
        {
            "span_id": ids,
            "parent_span_id": st.none() | st.just("") | ids,
            "name": st.none() | pg_text,
            "kind": st.none() | st.integers(0, 5),
            "start_time_unix_nano": nanos,
            "end_time_unix_nano": nanos,
            "service_name": service_names,
            "status_code": st.none() | st.integers(-1, 3),
            "status_message": st.none() | pg_text,
        }
    )
