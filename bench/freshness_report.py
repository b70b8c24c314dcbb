"""The freshness benchmark's results: its Markdown, its README section, its panel of the chart.

Reads what bench/freshness.py writes (``"kind": "freshness"`` in the JSON file).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from bench.report import duration, spans_m
from bench.workload import COLLECTOR_BATCH_SECONDS, LATE_SPAN_DELAY_SECONDS, TRACE_SECONDS
from cnpg_trace_summaries.contract import DIRTY_TABLE, SUMMARIES

KIND = "freshness"


def is_freshness(results: dict) -> bool:
    return results.get("kind") == KIND


def label(results: dict) -> str:
    """freshness-9.6M-spans"""
    spans = results["spans_in_window"]
    size = f"{spans / 1e6:.1f}M" if spans >= 1e6 else f"{spans / 1e3:.0f}k"
    return f"{KIND}-{size}-spans"


def config_name(config: dict) -> str:
    return f"{config['mode']}, every {config['interval']}"


def seconds(value: float | None) -> str:
    return "-" if value is None else duration(value)


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def _table_cells(config: dict, name: str) -> dict | None:
    """Size, dead tuples and autovacuums of ``name`` before, at most and after (None: absent)."""
    before, after = config["tables_before"].get(name), config["tables_after"].get(name)
    if before is None or after is None:
        return None
    series = [s[name] for s in config["tables_series"] if s.get(name)] + [after]
    return {
        "bytes": f"{mib(before['total_bytes'])} → {mib(after['total_bytes'])} "
        f"(at most {mib(max(s['total_bytes'] for s in series))})",
        "dead": f"{before['dead_rows']:,} → {after['dead_rows']:,} "
        f"(at most {max(s['dead_rows'] for s in series):,})",
        "live": f"{before['live_rows']:,} → {after['live_rows']:,}",
        "autovacuums": f"{after['autovacuums'] - before['autovacuums']:,}",
    }


def _spread(figures: dict, *stats: str) -> str:
    return " / ".join(seconds(figures.get(stat)) for stat in stats)


def _ingest(c: dict) -> str:
    written = c["collector"]
    return f"{written['spans_per_second']:,.0f} ({written['spans_per_batch']:.0f})"


def _insert(c: dict) -> str:
    written = c["collector"]
    return (
        f"{written['insert_ms_p50']:.1f} / {written['insert_ms_p99']:.1f} / "
        f"{written['insert_ms_max']:.0f} ms"
    )


def _job_cpu(c: dict) -> str:
    runs = c["runs"]
    return (
        f"**{runs['cpu_share']:.2%}** ({duration(runs['cpu_s'])}; "
        f"{runs['cpu_runs_seen']}/{runs['started']} runs)"
    )


def _table(name: str, field: str):
    return lambda c: (_table_cells(c, name) or {}).get(field, "-")


# The side-by-side table's rows: what, and a configuration's cell.
ROWS = (
    ("spans in the window at install", lambda c: f"{c['spans_in_window']:,}"),
    ("install: `alembic upgrade head`", lambda c: duration(c["install_s"])),
    ("pg_cron schedule", lambda c: f"`{c['schedule']}`"),
    ("measured: steady ingest + the wait for the last sampled traces",
     lambda c: f"{c['minutes']:.1f} min + {duration(c['drain_s'])}"),
    ("ingest: spans/s written (spans per INSERT)", _ingest),
    ("INSERT and its commit: p50 / p99 / max", _insert),
    ("sampled traces (never listed)", lambda c: f"{c['listed'] + c['unlisted']:,} "
                                                f"({c['unlisted']})"),
    ("**time-to-list p50**", lambda c: f"**{seconds(c['time_to_list_s'].get('p50'))}**"),
    ("**time-to-list p99**", lambda c: f"**{seconds(c['time_to_list_s'].get('p99'))}**"),
    ("time-to-list max", lambda c: seconds(c["time_to_list_s"].get("max"))),
    ("time-to-list by pg_cron's record: p50 / p99",
     lambda c: _spread(c["time_to_list_by_pg_cron_s"], "p50", "p99")),
    ("pg_cron runs: started (failed); ticks without a run",
     lambda c: f"{c['runs']['started']} ({c['runs']['failed']}); {c['runs']['missed_ticks']}"),
    ("refresh per run: p50 / p99 / max", lambda c: _spread(c["runs"]["duration_s"],
                                                           "p50", "p99", "max")),
    ("time refreshing: sum of the runs / wall time", lambda c: f"{c['runs']['busy_share']:.1%}"),
    ("**job CPU, share of one core** (CPU time; runs measured)", _job_cpu),
    ("autovacuum workers' CPU, share of one core",
     lambda c: f"{c['autovacuum_cpu_s'] / c['wall_s']:.2%} ({duration(c['autovacuum_cpu_s'])})"),
    ("whole server's CPU, share of one core", lambda c: f"{c['server_cpu_share']:.1%}"),
    (f"`{SUMMARIES}`: size", _table(SUMMARIES, "bytes")),
    (f"`{SUMMARIES}`: live tuples", _table(SUMMARIES, "live")),
    (f"`{SUMMARIES}`: dead tuples", _table(SUMMARIES, "dead")),
    (f"`{SUMMARIES}`: autovacuums", _table(SUMMARIES, "autovacuums")),
    (f"`{DIRTY_TABLE}`: size", _table(DIRTY_TABLE, "bytes")),
    (f"`{DIRTY_TABLE}`: live tuples", _table(DIRTY_TABLE, "live")),
    (f"`{DIRTY_TABLE}`: dead tuples", _table(DIRTY_TABLE, "dead")),
    (f"`{DIRTY_TABLE}`: autovacuums", _table(DIRTY_TABLE, "autovacuums")),
)  # fmt: skip


def side_by_side(run: dict) -> list[str]:
    lines = [
        "| | " + " | ".join(config_name(c) for c in run["configs"]) + " |",
        "|---|" + "---|" * len(run["configs"]),
    ]
    for what, cell in ROWS:
        lines.append(f"| {what} | " + " | ".join(cell(c) for c in run["configs"]) + " |")
    return lines


def headline(run: dict) -> str:
    """One sentence per configuration: time-to-list p50 / p99 and the job's CPU."""
    parts = []
    for c in run["configs"]:
        t = c["time_to_list_s"]
        if not t.get("count"):
            parts.append(f"{config_name(c)}: no trace listed")
            continue
        parts.append(
            f"{config_name(c)}: time-to-list p50 {duration(t['p50'])}, p99 {duration(t['p99'])} "
            f"(job CPU {c['runs']['cpu_share']:.2%} of a core)"
        )
    return f"freshness at {spans_m(run['spans_in_window'])} spans: " + "; ".join(parts)


METHOD = f"""\
**Freshness** (`python -m bench freshness`, bench/freshness.py) measures what a dashboard
user sees: how long after a span is written its trace is listed. On PostgreSQL
{{server}} with pg_cron {{pg_cron}} (background workers, `cron.database_name` = the
app database), the data is loaded as for the benchmark (`--traces`), then each
configuration is installed in turn with `alembic -x summaries=MODE -x
refresh_interval=INTERVAL upgrade head`, and **pg_cron runs the job**: nothing else
refreshes. For `--minutes` a collector (bench/collector.py) writes `--rate` spans/s
the way an OpenTelemetry collector does: every {COLLECTOR_BATCH_SECONDS[0] * 1000:.0f} to
{COLLECTOR_BATCH_SECONDS[1] * 1000:.0f} ms one INSERT of the spans exported since the last
(new traces of 1 to 19 spans whose spans end, and are exported, over
{TRACE_SECONDS[0]:g} to {TRACE_SECONDS[1]:g} s, children before their root; one trace in
{{late}} gets a late span {LATE_SPAN_DELAY_SECONDS[0]:.0f} to {LATE_SPAN_DELAY_SECONDS[1]:.0f} s
after), each INSERT committed on its own. One trace in `--sample-every` is timed: from the
moment the commit of its first span returned to the first moment a probe finds it
(bench/probe.py: every `--probe-seconds`, one `SELECT trace_id FROM otel_trace_summaries
WHERE trace_id = ANY(...)` for every pending sampled trace; a trace counts as listed when
the query that found it began, so the figure is at most one probe interval late). After
the minutes, ingest goes on while the last sampled traces are waited for (two intervals
and a minute at most; any not found by then are counted, "never listed"). "By pg_cron's
record" is the same time taken to the end of the first successful run that started after
the commit (`cron.job_run_details`), without the probe's polling. CPU: {{cpu_method}}.
The summaries' and the dirty-key table's size, live and dead tuples and autovacuums come
from `pg_total_relation_size` and `pg_stat_user_tables`, read before the ingest starts,
every 30 s, and after the last run; autovacuum runs with its defaults. Between
configurations the job is unscheduled, `alembic downgrade -1` removes the summaries and
the spans the collector wrote are deleted, so each configuration starts from the same data.
"""


def method(run: dict) -> str:
    server = run["server"]["server_version"].split()[0]
    text = METHOD.format(
        server=server,
        pg_cron=run.get("pg_cron", "?"),
        late=run.get("late_trace_every", 50),
        cpu_method=run["cpu_method"],
    )
    return textwrap.fill(" ".join(text.split()), 90) + "\n"


def markdown(run: dict) -> str:
    server = run["server"]
    lines = [
        f"# Freshness: {run['spans_in_window']:,} spans in the window, "
        f"{len(run['configs'])} configuration(s)",
        "",
        f"Run {run['started_at']} - {run['finished_at']}; {server['cpu_cores']} cores, "
        f"{server['memory_gib']} GiB, PostgreSQL {server['server_version']}, pg_cron "
        f"{run.get('pg_cron', '?')}, shared_buffers {server['shared_buffers']}, work_mem "
        f"{server['work_mem']}. {run['spans_total']:,} spans in otel_traces before the ingest. "
        f"Code: commit {run['code']['commit'][:12]}"
        f"{' with uncommitted changes' if run['code'].get('uncommitted_changes') else ''}.",
        "",
        headline(run) + ".",
        "",
        *side_by_side(run),
        "",
        "## Method",
        "",
        method(run),
        "## Every pg_cron run",
        "",
    ]
    for config in run["configs"]:
        durations = [r["seconds"] for r in config["run_list"]]
        failed = [r for r in config["run_list"] if r["status"] != "succeeded"]
        lines += [
            f"**{config_name(config)}** (`{config['command']}`): {len(durations)} runs, "
            "seconds each: "
            + ", ".join("-" if d is None else f"{d:.3f}" for d in durations)
            + (f". Not succeeded: {failed}" if failed else "")
            + (f". Failures: {config['runs']['failures']}" if config["runs"]["failures"] else "")
            + ".",
            "",
        ]
    return "\n".join(lines)


# -- README.md and the chart -------------------------------------------------------------------
def command(run: dict, defaults: dict[str, str]) -> str:
    """The command line of a run, with the options that differ from the defaults."""
    options = run.get("options", {})
    flags = [f"--traces {options.get('traces', run['traces'])}"]
    for name, default in defaults.items():
        value = options.get(name)
        if value is not None and value != default:
            flags.append(f"--{name.replace('_', '-')} {value.removesuffix('.0')}")
    return f"`python -m bench freshness {' '.join(flags)}`"


def readme_section(runs: list[dict], defaults: dict[str, str]) -> list[str]:
    if not runs:
        return []
    lines = ["## Freshness: how soon a new trace is listed, pg_cron refreshing", ""]
    for run in runs:
        lines += [
            f"{run['spans_in_window']:,} spans in the window, {run['started_at'][:10]} "
            f"({command(run, defaults)}; every figure and every run: "
            f"[{label(run)}.md]({label(run)}.md)):",
            "",
            *side_by_side(run),
            "",
        ]
    return lines


def panel(axis, runs: list[dict]) -> None:
    """Time-to-list p50 and p99 (and the max) per configuration, every freshness run."""
    from matplotlib import ticker  # the chart's, imported where it is drawn (bench/chart.py)

    names, p50, p99, top, intervals = [], [], [], [], []
    for run in runs:
        for c in run["configs"]:
            t = c["time_to_list_s"]
            if not t.get("count"):
                continue
            suffix = f"\n{spans_m(run['spans_in_window'])} spans" if len(runs) > 1 else ""
            names.append(f"{c['mode']}\nevery {c['interval']}{suffix}")
            p50.append(t["p50"])
            p99.append(t["p99"])
            top.append(t["max"])
            intervals.append(c["interval_s"])
    xs = range(len(names))
    width = 0.38
    axis.bar([x - width / 2 for x in xs], p50, width, label="time-to-list p50", color="C2")
    axis.bar([x + width / 2 for x in xs], p99, width, label="time-to-list p99", color="C3")
    axis.scatter(list(xs), top, marker="_", s=400, color="black", label="max", zorder=3)
    axis.scatter(list(xs), intervals, marker="x", color="grey", label="the refresh interval",
                 zorder=3)  # fmt: skip
    for x, a, b in zip(xs, p50, p99, strict=True):
        axis.annotate(f"{a:.1f}s", (x - width / 2, a), ha="center", va="bottom", fontsize=7)
        axis.annotate(f"{b:.1f}s", (x + width / 2, b), ha="center", va="bottom", fontsize=7)
    axis.set_xticks(list(xs), names, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylim(bottom=min(p50) / 4, top=max(top + intervals) * 2)
    axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g} s"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_ylabel("from the first span's commit to listed (log scale)")
    last = runs[-1]
    rate = int(last["options"].get("rate", "1000"))
    axis.set_title(
        f"time-to-list under {rate:,} spans/s, pg_cron {last.get('pg_cron', '')} refreshing — "
        f"PostgreSQL {last['server']['server_version'].split()[0]}",
        fontsize=10,
    )
    axis.grid(True, which="both", axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")


def load_runs(out: Path) -> list[dict]:
    """The freshness results in ``out``, oldest first."""
    runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{KIND}-*.json"))]
    return sorted((r for r in runs if is_freshness(r)), key=lambda r: r["started_at"])
