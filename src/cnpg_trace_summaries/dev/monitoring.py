"""Render the monitoring files from the metrics the package defines.

    python -m cnpg_trace_summaries.dev.monitoring   # writes both, from the checkout

* ``deploy/cnpg/monitoring.yaml``: the ConfigMap of custom queries for
  CloudNativePG's exporter (``spec.monitoring.customQueriesConfigMap``): the
  metrics function in the app database, and pg_cron's record in ``postgres``.
  Each metric is ``cnpg_<query>_<column>``.
* ``deploy/grafana/otel-trace-summaries.json``: a dashboard of lag, refresh
  duration, backlog and rows over time, and one panel per alert of
  ``deploy/cnpg/alerts.yaml`` (hand-written: its expressions become the panels).

tests/test_monitoring.py fails while the committed files and this rendering
differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from cnpg_trace_summaries.sql import metrics

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "deploy/cnpg/monitoring.yaml"
ALERTS = ROOT / "deploy/cnpg/alerts.yaml"
DASHBOARD = ROOT / "deploy/grafana/otel-trace-summaries.json"

# The exporter's queries: name -> (query, the database it runs in, its columns).
QUERY_NAME = "trace_summaries"
CRON_QUERY_NAME = "trace_summaries_cron"
CRON_DATABASE = "postgres"  # pg_cron's database in CNPG's layout (cluster.yaml)
APP_DATABASE = "app"

HEADER = """\
# Custom queries for CloudNativePG's exporter (port 9187): the freshness of
# otel_trace_summaries on the dashboards CNPG users already have. Rendered by
# `python -m cnpg_trace_summaries.dev.monitoring` from the package's metrics; the
# Cluster (cluster.yaml) names it in spec.monitoring.customQueriesConfigMap.
#
# Every instance runs them (primary and replicas: both queries work on a hot
# standby), each in a transaction of its own, as postgres with pg_monitor:
#   * trace_summaries, in the app database: the metrics function the migration
#     installs (only its owner and pg_monitor may run it); the summaries' schema
#     is public here, as CNPG's app has it;
#   * trace_summaries_cron, in postgres (where pg_cron lives): each summaries
#     job's last run and last success.
# Metrics are cnpg_<query>_<column>: cnpg_trace_summaries_lag_seconds, ...
#
#   kubectl apply -f deploy/cnpg/monitoring.yaml
"""


class _Block(str):
    """A string YAML writes as a literal block (|), as a person would."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Block, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
)


def _yaml(value) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, width=100)


def _metric_list(columns) -> list[dict]:
    return [{name: {"usage": usage, "description": what}} for name, usage, what in columns]


def monitoring() -> str:
    queries = {
        QUERY_NAME: {
            "query": _Block(metrics.EXPORTER_QUERY + "\n"),
            "target_databases": [APP_DATABASE],
            "metrics": _metric_list(
                [("datname", "LABEL", "the database of the summaries")]
                + [(name, usage, what) for name, _, usage, what in metrics.COLUMNS]
            ),
        },
        CRON_QUERY_NAME: {
            "query": _Block(metrics.CRON_METRICS.strip() + "\n"),
            "target_databases": [CRON_DATABASE],
            "metrics": _metric_list(metrics.CRON_COLUMNS),
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "otel-trace-summaries-monitoring",
            "labels": {"cnpg.io/reload": "", "app.kubernetes.io/name": "cnpg-trace-summaries"},
        },
        "data": {"custom-queries": _Block(_yaml(queries))},
    }
    return HEADER + _yaml(config_map)


# -- the dashboard -----------------------------------------------------------------------
PANELS = (
    ("Lag", "cnpg_trace_summaries_lag_seconds", "s",
     "How long the oldest span the summaries do not show yet has waited."),
    ("Stale after", "cnpg_trace_summaries_stale_after_seconds", "s",
     "Two refresh intervals: lag above this is stale."),
    ("Refresh duration (incremental)", "cnpg_trace_summaries_last_refresh_duration_seconds", "s",
     "How long the last refresh took."),
    ("Last successful pg_cron run", "cnpg_trace_summaries_cron_last_success_age_seconds", "s",
     "Time since the job last succeeded."),
    ("Backlog (incremental)", "cnpg_trace_summaries_backlog_traces", "short",
     "Changed traces queued for the next refresh."),
    ("Rows", "cnpg_trace_summaries_estimated_rows", "short",
     "Summary rows (the planner's estimate)."),
)  # fmt: skip


def _panel(number: int, title: str, expr: str, unit: str, description: str) -> dict:
    return {
        "id": number,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((number - 1) % 2), "y": 8 * ((number - 1) // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{pod}} {{datname}}"}],
    }


def alert_rules() -> list[dict]:
    (rule,) = [doc for doc in yaml.safe_load_all(ALERTS.read_text()) if doc]
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> str:
    panels = [_panel(n, *spec) for n, spec in enumerate(PANELS, start=1)]
    for rule in alert_rules():
        panels.append(
            _panel(
                len(panels) + 1,
                f"Alert: {rule['alert']}",
                rule["expr"],
                "short",
                rule["annotations"]["summary"],
            )
        )
    board = {
        "title": "otel_trace_summaries",
        "uid": "otel-trace-summaries",
        "tags": ["cloudnative-pg", "cnpg-trace-summaries"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }
    return json.dumps(board, indent=2) + "\n"


def main() -> int:
    for path, text in ((MONITORING, monitoring()), (DASHBOARD, dashboard())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        sys.stderr.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
