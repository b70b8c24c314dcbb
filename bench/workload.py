"""The benchmark's workload, defined once: the window, the spans' shape, the rates, the sizes.

Read by the modules that write spans (generate.py: the loaded traces;
incremental.py: the cycles and the boundary band; ingest.py: the capture
trigger's overhead; __main__.py: the view's cycles) and by those that describe
them (report.py, readme.py). The window itself is the contract's
(``WINDOW``, ``WINDOW_DAYS``), and so are the span columns (``SPAN_COLUMNS``).
"""

from __future__ import annotations

from cnpg_trace_summaries.contract import SPAN_COLUMNS, WINDOW, WINDOW_DAYS

# -- the window ---------------------------------------------------------------------------
# A span in the window, as the summaries count it (otel_traces' own columns).
IN_WINDOW = f"\"timestamp\" > now() - interval '{WINDOW}' AND trace_id <> ''"
# Loaded traces start over the last LOADED_DAYS (6.9), a tenth of a day inside the window...
LOADED_DAYS = WINDOW_DAYS - 0.1
# ...but one in OLD_TRACE_EVERY (5 %), which starts a day before the window.
OLD_TRACE_EVERY = 20
OLD_TRACE_DAYS = WINDOW_DAYS + 1

# -- the spans' shape ------------------------------------------------------------------------
SERVICES = (
    "frontend", "checkout", "cart", "catalog", "payment", "shipping",
    "inventory", "currency", "email", "auth", "recommendation", "ads",
)  # fmt: skip
# Spans of every new trace the cycles, the boundary band and the ingest rounds write
# (loaded traces have 1 to 19, 10 on average).
SPANS_PER_TRACE = 10
# Trace i fails in its last span where i % ERROR_EVERY = 0 (about 3 %).
ERROR_EVERY = 33
ERROR_MESSAGE = "deadline exceeded"
# The constant columns of a generated span (service_instance is 'pod-' || i % PODS).
PODS = 50
SERVICE_VERSION = "1.4.2"
SCOPE_NAME = "io.opentelemetry.demo"
SCOPE_VERSION = "1.0.0"
ATTRIBUTES = '{"http.method":"GET"}'
RESOURCE_ATTRIBUTES = '{"k8s.namespace.name":"shop"}'


def span_column_list(null: tuple[str, ...] = ()) -> str:
    """otel_traces' span columns, quoted, in the contract's order, but those left NULL."""
    unknown = set(null) - set(SPAN_COLUMNS)
    if unknown:
        raise ValueError(f"not span columns: {sorted(unknown)}")
    return ", ".join(f'"{column}"' for column in SPAN_COLUMNS if column not in null)


# Every span column, for INSERT and COPY.
SPAN_COLUMN_LIST = span_column_list()


def span_tail_sql(trace: str, last_span: str) -> str:
    """Span s's values from service_name to links, as SQL, for a generating statement.

    ``trace`` is the trace's number and ``last_span`` its last span's (SQL
    expressions); the service is picked from the ``%(services)s`` parameter.
    """
    error = f"{trace} %% {ERROR_EVERY} = 0 AND s = {last_span}"
    return f"""(%(services)s::text[])[1 + ({trace} * 7 + s * 3) %% {len(SERVICES)}],
    '{SERVICE_VERSION}', 'pod-' || ({trace} %% {PODS}), '{SCOPE_NAME}', '{SCOPE_VERSION}',
    CASE WHEN {error} THEN 2 WHEN s %% 4 = 0 THEN 1 ELSE 0 END,
    CASE WHEN {error} THEN '{ERROR_MESSAGE}' ELSE '' END,
    '{ATTRIBUTES}', '{RESOURCE_ATTRIBUTES}', '[]', '[]'"""


def span_tail(trace: int, span: int, last_span: int) -> tuple:
    """The same values in Python, for rows made before a statement runs (ingest.py)."""
    error = trace % ERROR_EVERY == 0 and span == last_span
    return (
        SERVICES[(trace * 7 + span * 3) % len(SERVICES)],
        SERVICE_VERSION,
        f"pod-{trace % PODS}",
        SCOPE_NAME,
        SCOPE_VERSION,
        2 if error else (1 if span % 4 == 0 else 0),
        ERROR_MESSAGE if error else "",
        ATTRIBUTES,
        RESOURCE_ATTRIBUTES,
        "[]",
        "[]",
    )


# -- rates ------------------------------------------------------------------------------------
RATE = 1_000  # spans per second of the steady state
RATES = (2_000, 4_000, 8_000)  # one more cycle at each (python -m bench --rates)

# -- statement sizes ---------------------------------------------------------------------------
ROWS_PER_STATEMENT = 1_000  # a collector's INSERT (and COPY) of new spans
LOAD_CHUNK_TRACES = 20_000  # traces per loading statement, each committed
BAND_CHUNK_TRACES = 10_000  # traces per statement of the boundary band
BAND_SECONDS = 3_600  # the boundary band covers the next hour of the boundary's way
# A block of the ingest overhead: INGEST_STATEMENTS statements of ROWS_PER_STATEMENT
# rows (INSERT or COPY), or INGEST_SINGLE_ROWS single-row INSERTs.
INGEST_STATEMENTS = 5
INGEST_SINGLE_ROWS = 50

# -- late spans ----------------------------------------------------------------------------------
# Late error spans per cycle, of traces already summarised: the view's cycles
# (__main__.LATE_SPANS_OF_NEWEST_TRACES_SQL) and the incremental's
# (incremental.LATE_SPANS_OF_RANDOM_TRACES_SQL).
LATE_SPANS = 50


def view_cycle_traces(traces: int) -> int:
    """New traces per cycle of the view's part: 0.5 % of the run's traces, at least 10."""
    return max(10, traces // 200)


# -- the freshness benchmark's collector (bench/collector.py) ------------------------------------
# One INSERT of whatever spans were exported since the last, every 100 to 200 ms.
COLLECTOR_BATCH_SECONDS = (0.1, 0.2)
# A trace's spans end (and are exported) over 0.2 to 2 seconds; the root span ends last.
TRACE_SECONDS = (0.2, 2.0)
# One trace in LATE_TRACE_EVERY gets one more span 5 to 60 seconds after its root ended.
LATE_TRACE_EVERY = 50
LATE_SPAN_DELAY_SECONDS = (5.0, 60.0)
# One trace in SAMPLE_EVERY is timed from the commit of its first span to its listing...
SAMPLE_EVERY = 50
# ...by a probe that looks for every pending sampled trace at once, this often.
PROBE_SECONDS = 0.15
# The configurations compared, MODE:INTERVAL (python -m bench freshness --configs).
FRESHNESS_CONFIGS = "incremental:10s,incremental:2min,view:2min"
