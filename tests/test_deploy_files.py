"""The deployment files agree with what the migrations expect of a cluster."""

from __future__ import annotations

import tomllib

import yaml

from cnpg_trace_summaries.database import normalize_url
from cnpg_trace_summaries.localdb import APP_DATABASE
from cnpg_trace_summaries.schema import REFRESH_INTERVAL_SECONDS, REFRESH_SCHEDULE
from tests.conftest import ROOT

CLUSTER = yaml.safe_load((ROOT / "deploy/cnpg/cluster.yaml").read_text())
CRONJOB = yaml.safe_load((ROOT / "deploy/cnpg/refresh-cronjob.yaml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_cnpg_cluster_preloads_pg_cron_for_the_app_database_with_background_workers():
    assert CLUSTER["apiVersion"] == "postgresql.cnpg.io/v1"
    assert CLUSTER["kind"] == "Cluster"
    postgresql = CLUSTER["spec"]["postgresql"]
    assert "pg_cron" in postgresql["shared_preload_libraries"]
    initdb = CLUSTER["spec"]["bootstrap"]["initdb"]
    # The migration schedules only where pg_cron lives in the migrated database.
    assert postgresql["parameters"]["cron.database_name"] == initdb["database"]
    # CNPG's pg_hba would refuse pg_cron's libpq connections to cron.host.
    assert postgresql["parameters"]["cron.use_background_workers"] == "on"
    assert "CREATE EXTENSION IF NOT EXISTS pg_cron" in initdb["postInitApplicationSQL"]
    assert f"GRANT USAGE ON SCHEMA cron TO {initdb['owner']}" in initdb["postInitApplicationSQL"]


def test_cnpg_cluster_needs_an_image_with_pg_cron_and_says_so():
    text = (ROOT / "deploy/cnpg/cluster.yaml").read_text()
    assert "pg_cron is not in CNPG's default image" in text
    assert CLUSTER["spec"]["imageName"]


def test_refresh_cronjob_runs_the_console_command_on_the_same_schedule():
    assert CRONJOB["kind"] == "CronJob"
    spec = CRONJOB["spec"]
    assert spec["schedule"] == REFRESH_SCHEDULE
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] < REFRESH_INTERVAL_SECONDS
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["trace-summaries", "refresh"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "trace-summaries" in scripts
    (env,) = container["env"]
    assert env["name"] == "DATABASE_URL"
    # CNPG's generated <cluster>-app secret holds a libpq URI under "uri".
    assert env["valueFrom"]["secretKeyRef"] == {
        "name": f"{CLUSTER['metadata']['name']}-app",
        "key": "uri",
    }
    normalize_url("postgresql://app:secret@traces-rw.default:5432/app")


def test_docker_compose_db_has_the_same_pg_cron_settings_and_a_healthcheck():
    db = COMPOSE["services"]["db"]
    command = " ".join(db["command"])
    assert "shared_preload_libraries=pg_cron" in command
    assert f"cron.database_name={APP_DATABASE}" in command
    assert "cron.use_background_workers=on" in command
    assert db["environment"]["POSTGRES_DB"] == APP_DATABASE
    assert "SHOW cron.database_name" in " ".join(db["healthcheck"]["test"])
    dockerfile = (ROOT / "deploy/docker" / "Dockerfile").read_text()
    assert db["build"]["context"] == "deploy/docker"
    assert "postgresql-${PG_MAJOR}-cron" in dockerfile
