"""What a run leaves in its results directory (``--out``): its JSON, then, from every JSON
file there, each run's Markdown, the chart and README.md.

Above report.py and freshness_report.py (a run's Markdown), chart.py (the chart) and
readme.py (README.md, which reads their tables), so that none imports its caller.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import chart, freshness_report, readme, report
from cnpg_trace_summaries.contract import REFRESH_INTERVAL_SECONDS


def label(results: dict) -> str:
    """The name of a result's files: 9.6M-spans, 9.6M-spans-hypertable, freshness-9.6M-spans."""
    if freshness_report.is_freshness(results):
        return freshness_report.label(results)
    return report.label(results)


def rewrite(out: Path, schedule_seconds: float = REFRESH_INTERVAL_SECONDS) -> list[Path]:
    """Every result's Markdown, the chart and README.md again, from the JSON files in ``out``."""
    paths = []
    for run in report.load_runs(out):
        path = out / f"{report.label(run)}.md"
        path.write_text(report.markdown(run, schedule_seconds))
        paths.append(path)
    for run in freshness_report.load_runs(out):
        path = out / f"{freshness_report.label(run)}.md"
        path.write_text(freshness_report.markdown(run))
        paths.append(path)
    return [*paths, chart.chart(out, schedule_seconds), readme.write(out, schedule_seconds)]


def write(
    results: dict, out: Path, schedule_seconds: float = REFRESH_INTERVAL_SECONDS
) -> list[Path]:
    """This run's JSON, then every result's Markdown, the chart and README.md (:func:`rewrite`)."""
    json_path = out / f"{label(results)}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return [json_path, *rewrite(out, schedule_seconds)]
