"""Monitoring the CNPG way: the exporter's queries, the alerts and the dashboard.

The queries of deploy/cnpg/monitoring.yaml run as CloudNativePG's exporter runs
them (a fresh connection, application_name cnpg_metrics_exporter, one read-only
transaction, the pg_monitor role, search_path pg_catalog, public, pg_temp), on a
primary and on its hot standby, in CNPG's layout (pg_cron in postgres). The
alerts use only exported metrics, with status' thresholds; the dashboard too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
import yaml

from cnpg_trace_summaries.contract import DEFAULT_CRON_DATABASE
from cnpg_trace_summaries.dev import monitoring
from cnpg_trace_summaries.sql import metrics
from tests.support.commands import run_cli
from tests.support.database import Database
from tests.support.deploy_files import documents
from tests.support.incremental import traces_sql
from tests.support.processes import wait_for
from tests.support.revisions import FIRST
from tests.support.servers import data_directory, fresh_database, local_server

MODES = ("view", "incremental")
PREFIX = "cnpg_"


def exporter_queries() -> dict[str, dict]:
    (config_map,) = documents(monitoring.MONITORING)
    return yaml.safe_load(config_map["data"]["custom-queries"])


def exported_metrics() -> dict[str, str]:
    """Every metric the exporter exports: name -> usage (labels are not metrics)."""
    return {
        f"{PREFIX}{query}_{column}": usage
        for query, spec in exporter_queries().items()
        for item in spec["metrics"]
        for column, details in item.items()
        if (usage := details["usage"]) != "LABEL"
    }


def run_as_cnpg_does(url: str, query: str) -> list[dict]:
    with psycopg.connect(url, application_name="cnpg_metrics_exporter") as conn:
        conn.read_only = True
        with conn.transaction():
            conn.execute("SET LOCAL ROLE pg_monitor")
            conn.execute("SET LOCAL search_path = pg_catalog, public, pg_temp")
            cur = conn.execute(query)
            columns = [column.name for column in cur.description]
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture(scope="module")
def cnpg_pair(cron_server) -> Iterator[tuple]:
    """A primary in CNPG's layout (pg_cron in postgres, the exporter's grants) and a standby,
    with the summaries installed in both modes, one database each."""
    with local_server(
        "monitoring", cron_server.install, pg_cron_database=DEFAULT_CRON_DATABASE
    ) as primary:
        with primary.connect(DEFAULT_CRON_DATABASE, autocommit=True) as conn:
            for statement in metrics.CRON_MONITOR_GRANTS:
                conn.execute(statement)
        with fresh_database(primary, "view") as view, fresh_database(primary, "inc") as inc:
            databases = {"view": Database(primary, view), "incremental": Database(primary, inc)}
            for mode, database in databases.items():
                database.migrate("upgrade", FIRST)
                database.execute(traces_sql("t", 20, age="20 minutes"))
                database.migrate("upgrade", "head", x={"summaries": mode})
            standby = primary.standby(data_directory("trace-summaries-monitoring-standby-"))
            try:
                yield primary, standby, databases
            finally:
                standby.remove()


def assert_types(row: dict, spec: dict) -> None:
    for item in spec["metrics"]:
        ((column, details),) = item.items()
        assert column in row, column
        value = row[column]
        if details["usage"] == "LABEL":
            assert isinstance(value, str), (column, value)
        else:
            assert value is None or isinstance(value, int | float | Decimal), (column, value)


@pytest.mark.parametrize("where", ["primary", "standby"])
def test_every_exporter_query_runs_as_cnpg_runs_it_and_gives_every_metric(cnpg_pair, where):
    primary, standby, databases = cnpg_pair
    server = primary if where == "primary" else standby
    queries = exporter_queries()
    for mode, database in databases.items():
        if where == "standby":  # what the primary wrote has reached the standby
            wait_for(Database(standby, database.dbname), "SELECT 1 FROM otel_trace_summaries "
                     "LIMIT 1", what="replay")  # fmt: skip
        spec = queries[monitoring.QUERY_NAME]
        (row,) = run_as_cnpg_does(server.url(database.dbname), spec["query"])
        assert_types(row, spec)
        assert (row["mode"], row["datname"], row["stale"]) == (mode, database.dbname, 0)
    spec = queries[monitoring.CRON_QUERY_NAME]
    rows = run_as_cnpg_does(server.url(DEFAULT_CRON_DATABASE), spec["query"])
    assert sorted(row["datname"] for row in rows) == sorted(d.dbname for d in databases.values())
    for row in rows:
        assert_types(row, spec)
        assert (row["active"], row["failing"]) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_stale_install_is_above_the_alert_threshold_when_status_says_unhealthy(cnpg_pair, mode):
    primary, _, databases = cnpg_pair
    database = databases[mode]
    cron = Database(primary, DEFAULT_CRON_DATABASE)
    job = "SELECT cron.alter_job(jobid, active := %s) FROM cron.job WHERE jobname = %s"
    cron.execute(job, (False, database.job_name))  # no refresh comes
    database.execute(  # a span that has waited ten minutes
        "INSERT INTO otel_traces (timestamp, trace_id, span_id) "
        "VALUES (now() - interval '10 minutes', 'waiting-' || md5(random()::text), 'root')"
    )
    (row,) = run_as_cnpg_does(primary.url(database.dbname), metrics.EXPORTER_QUERY)
    status = run_cli("status", "--json", DATABASE_URL=database.url)
    assert row["lag_seconds"] > row["stale_after_seconds"]  # TraceSummariesStale's expression
    assert row["stale"] == 1
    assert status.returncode == 2
    assert json.loads(status.stdout)["metrics"]["lag_seconds"] > row["stale_after_seconds"]
    assert run_cli("refresh", DATABASE_URL=database.url).returncode == 0
    cron.execute(job, (True, database.job_name))
    (row,) = run_as_cnpg_does(primary.url(database.dbname), metrics.EXPORTER_QUERY)
    assert row["stale"] == 0


# -- the files ---------------------------------------------------------------------------------
METRIC = re.compile(rf"\b{PREFIX}trace_summaries_\w+")


def test_the_monitoring_files_are_rendered_from_the_package():
    assert monitoring.MONITORING.read_text() == monitoring.monitoring()
    assert monitoring.DASHBOARD.read_text() == monitoring.dashboard()


def test_every_metric_is_named_by_prometheus_conventions():
    for name, usage in exported_metrics().items():
        assert re.fullmatch(r"[a-z_]+", name), name
        assert usage in {"GAUGE", "COUNTER"}, name
        assert name.endswith("_total") == (usage == "COUNTER"), name


def test_every_alert_uses_exported_metrics_with_status_thresholds_and_names_a_command():
    exported = exported_metrics()
    rules = monitoring.alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "TraceSummariesStale", "TraceSummariesJobFailing", "TraceSummariesJobMissing",
        "TraceSummariesNotRefreshed", "TraceSummariesCaptureDisabled",
        "TraceSummariesRebuildPending",
    }  # fmt: skip
    for rule in rules:
        used = set(METRIC.findall(rule["expr"]))
        assert used and used <= set(exported), (rule["alert"], used - set(exported))
        # Two intervals, as status: a multiplier of an interval is STALE_INTERVALS.
        for factor in re.findall(r"(\d+) \* \S*interval_seconds", rule["expr"]):
            assert int(factor) == metrics.STALE_INTERVALS, rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]
        assert "`trace-summaries " in rule["annotations"]["description"], rule["alert"]


def test_the_dashboard_shows_exported_metrics_and_one_panel_per_alert():
    board = json.loads(monitoring.DASHBOARD.read_text())
    exported = exported_metrics()
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert set(METRIC.findall(target["expr"])) <= set(exported), panel["title"]
    titles = [panel["title"] for panel in board["panels"]]
    for rule in monitoring.alert_rules():
        assert titles.count(f"Alert: {rule['alert']}") == 1
    for shown in ("Lag", "Refresh duration (incremental)", "Backlog (incremental)", "Rows"):
        assert shown in titles


def test_the_cluster_uses_the_queries_and_lets_the_exporter_read_the_jobs():
    cluster = documents(monitoring.ROOT / "deploy/cnpg/cluster.yaml")[0]
    (config_map,) = documents(monitoring.MONITORING)
    (reference,) = cluster["spec"]["monitoring"]["customQueriesConfigMap"]
    assert reference == {"name": config_map["metadata"]["name"], "key": "custom-queries"}
    assert config_map["metadata"]["labels"]["cnpg.io/reload"] == ""
    post_init = cluster["spec"]["bootstrap"]["initdb"]["postInitSQL"]
    for statement in metrics.CRON_MONITOR_GRANTS:
        assert statement in post_init
    assert exporter_queries()[monitoring.CRON_QUERY_NAME]["target_databases"] == [
        cluster["spec"]["postgresql"]["parameters"]["cron.database_name"]
    ]
