"""The deployment files agree with the code: the image, the CNPG manifests, docker compose.

There is no Docker engine or Kubernetes here, so these files are parsed (YAML,
and the Dockerfile line by line) and checked against the definitions they
depend on: the contract, the options and their environment variables, the
pg_cron settings of every server the tests start, pyproject.toml, alembic.ini.
"""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import yaml

from cnpg_trace_summaries import interval as intervals
from cnpg_trace_summaries.contract import (
    DEFAULT_CRON_DATABASE,
    REFRESH_SCHEDULE,
)
from cnpg_trace_summaries.database import normalize_url
from cnpg_trace_summaries.dev import servers
from cnpg_trace_summaries.dev.localdb import APP_DATABASE
from cnpg_trace_summaries.options import OPTIONS, milliseconds
from cnpg_trace_summaries.pgcron import GRANTS_FOR_SCHEDULE_IN_DATABASE
from tests.support import ROOT
from tests.support.deploy_files import (
    container,
    dockerfile,
    dockerignore_excludes,
    documents,
    env,
    job_spec,
    pod_spec,
)

CNPG_DIR = ROOT / "deploy/cnpg"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OPTION_ENV = {option.env: option for option in OPTIONS.values() if option.env}
KNOWN_ENV = {*OPTION_ENV, "DATABASE_URL"}
ENV_NAME = re.compile(r"\bTRACE_SUMMARIES_[A-Z0-9_]+")

MANIFESTS = {path: documents(path) for path in sorted(CNPG_DIR.glob("*.yaml"))}


def manifest(kind: str) -> tuple[Path, dict]:
    (found,) = [
        (path, doc) for path, docs in MANIFESTS.items() for doc in docs if doc["kind"] == kind
    ]
    return found


CLUSTER_FILE, CLUSTER = manifest("Cluster")
JOB_FILE, JOB = manifest("Job")
CRONJOB_FILE, CRONJOB = manifest("CronJob")
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# The services of docker-compose.yml that run this project's image.
PROJECT_SERVICES = {
    name: service
    for name, service in COMPOSE["services"].items()
    if service.get("build", {}).get("context") == "."
}


_, STAGES = dockerfile(ROOT / "Dockerfile")
FINAL = STAGES[-1]


# -- the migration Job ----------------------------------------------------------------------
def test_every_manifest_is_a_named_kubernetes_object():
    assert {doc["kind"] for docs in MANIFESTS.values() for doc in docs} == {
        "Cluster",
        "Job",
        "CronJob",
        "ConfigMap",  # the exporter's queries (monitoring.yaml)
        "PrometheusRule",  # the alerts (alerts.yaml)
    }
    for docs in MANIFESTS.values():
        for doc in docs:
            assert doc["apiVersion"] and doc["metadata"]["name"]


def test_the_migration_job_runs_alembic_upgrade_head_where_the_image_copies_alembic_ini():
    assert JOB["apiVersion"] == "batch/v1"
    migrate = container(JOB)
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    workdir = migrate.get("workingDir", FINAL.workdir)
    assert workdir == FINAL.workdir
    # alembic.ini finds the migration environment beside itself.
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "alembic.ini")
    script_location = ini["alembic"]["script_location"]
    assert script_location.startswith("%(here)s/")
    environment = script_location.removeprefix("%(here)s/")
    copied = {(tuple(sources), dest) for origin, sources, dest in FINAL.copies() if origin is None}
    assert copied & {(("alembic.ini",), workdir), (("alembic.ini",), f"{workdir}/alembic.ini")}
    assert ((f"{environment}/",), f"{workdir}/{environment}") in copied


def test_the_migration_job_runs_once_with_bounded_retries_time_and_history():
    spec = job_spec(JOB)
    assert pod_spec(JOB)["restartPolicy"] == "Never"
    assert 0 < spec["backoffLimit"] <= 5
    assert spec["ttlSecondsAfterFinished"] > 0
    # It outlasts a second migrator's wait for the first (the advisory lock in env.py).
    option = OPTIONS["migration_lock_wait"]
    wait = env(JOB).get(option.env, {}).get("value", option.default)
    assert spec["activeDeadlineSeconds"] > milliseconds(wait) / 1000


def test_the_migration_job_fails_visibly_when_nothing_will_refresh_the_summaries():
    variables = env(JOB)
    option = OPTIONS["require_refresh"]
    assert option.parse(variables[option.env]["value"]) == "yes"
    text = JOB_FILE.read_text()
    assert "Turn it off" in text and "refresh-cronjob.yaml" in text


def test_the_migration_job_says_what_app_needs_for_pg_cron_in_cnpgs_default_layout():
    text = JOB_FILE.read_text()
    role = CLUSTER["spec"]["bootstrap"]["initdb"]["owner"]
    for statement in GRANTS_FOR_SCHEDULE_IN_DATABASE.format(role=role).split("; "):
        assert f"{statement};" in text
    assert "cron.use_background_workers = on" in text
    assert "advisory lock" in text
    assert "kubectl apply -f deploy/cnpg/migrate-job.yaml" in text


def test_the_migration_job_finds_pg_cron_where_the_cluster_puts_it():
    cron_database = CLUSTER["spec"]["postgresql"]["parameters"]["cron.database_name"]
    option = OPTIONS["cron_database"]
    given = env(JOB).get(option.env, {}).get("value")
    if given is not None:
        assert option.parse(given) == cron_database
    else:
        # Without the option the migration looks here, then in pg_cron's default database.
        assert cron_database in {
            CLUSTER["spec"]["bootstrap"]["initdb"]["database"],
            DEFAULT_CRON_DATABASE,
        }


# -- both workloads -----------------------------------------------------------------------
def test_the_job_and_the_cronjob_run_the_same_image_tagged_with_the_project_version():
    images = {container(JOB)["image"], container(CRONJOB)["image"]}
    (image,) = images
    assert image.rpartition(":")[2] == PYPROJECT["version"]
    assert {service["image"].rpartition(":")[2] for service in PROJECT_SERVICES.values()} == {
        PYPROJECT["version"]
    }


def test_every_secret_is_the_clusters_app_secret_and_its_uri():
    expected = {"name": f"{CLUSTER['metadata']['name']}-app", "key": "uri"}
    for workload in (JOB, CRONJOB):
        variables = env(workload)
        assert variables["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == expected
        for item in variables.values():
            if "valueFrom" in item:
                assert item["valueFrom"]["secretKeyRef"] == expected
    # CNPG's uri is a libpq URI, which DATABASE_URL accepts as it is.
    normalize_url("postgresql://app:secret@traces-rw.default:5432/app")


def test_every_environment_variable_is_an_option_or_database_url():
    used = set()
    for workload in (JOB, CRONJOB):
        used |= set(env(workload))
    for service in PROJECT_SERVICES.values():
        used |= set(service.get("environment", {}))
    assert used <= KNOWN_ENV, used - KNOWN_ENV
    # Names in comments too: a misspelt one in a comment misleads as well.
    for path in (JOB_FILE, CRONJOB_FILE, ROOT / "docker-compose.yml", ROOT / "Dockerfile"):
        mentioned = set(ENV_NAME.findall(path.read_text()))
        assert mentioned <= KNOWN_ENV, (path.name, mentioned - KNOWN_ENV)
    for service in PROJECT_SERVICES.values():
        for name, raw in service.get("environment", {}).items():
            if name in OPTION_ENV:
                OPTION_ENV[name].parse(str(raw))


def test_the_pods_run_as_a_numeric_non_root_user_without_privileges():
    (user,) = FINAL.all("USER")[-1:]
    uid = user.partition(":")[0]
    # Kubernetes can check runAsNonRoot only against a numeric user.
    assert uid.isdigit() and int(uid) != 0
    for workload in (JOB, CRONJOB):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"].get("runAsUser", int(uid)) != 0
        assert pod["automountServiceAccountToken"] is False
        security = container(workload)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]


# -- the refresh CronJob ------------------------------------------------------------------
def test_the_refresh_cronjob_runs_the_console_command_at_the_interval_it_names():
    assert CRONJOB["apiVersion"] == "batch/v1"
    spec = CRONJOB["spec"]
    env = {variable["name"]: variable.get("value") for variable in container(CRONJOB)["env"]}
    every = intervals.parse(env["TRACE_SUMMARIES_REFRESH_INTERVAL"])
    assert not every.in_seconds  # a CronJob schedules whole minutes
    assert spec["schedule"] == every.cron
    assert every == intervals.DEFAULT and every.cron == REFRESH_SCHEDULE  # the spec's
    assert spec["concurrencyPolicy"] == "Forbid"
    # Ends before the next run is due.
    assert job_spec(CRONJOB)["activeDeadlineSeconds"] < every.seconds
    assert pod_spec(CRONJOB)["restartPolicy"] == "Never"
    command = container(CRONJOB)["command"]
    assert command[0] in PYPROJECT["scripts"]
    assert command[1:] == ["refresh"]


# -- the cluster ------------------------------------------------------------------------------
def test_the_cluster_preloads_pg_cron_with_the_settings_of_every_test_server():
    postgresql = CLUSTER["spec"]["postgresql"]
    parameters = postgresql["parameters"]
    expected = servers.pg_cron_settings(parameters["cron.database_name"])
    assert expected.pop("shared_preload_libraries") in postgresql["shared_preload_libraries"]
    # CNPG's pg_hba would refuse pg_cron's libpq connections to cron.host.
    assert expected["cron.use_background_workers"] == "on"
    assert {key: parameters[key] for key in expected} == expected


def test_the_cluster_creates_pg_cron_where_it_lives_and_grants_app_what_the_migration_needs():
    cron_database = CLUSTER["spec"]["postgresql"]["parameters"]["cron.database_name"]
    initdb = CLUSTER["spec"]["bootstrap"]["initdb"]
    role, app_database = initdb["owner"], initdb["database"]
    # CNPG runs postInitSQL in postgres and postInitApplicationSQL in the app database.
    runs_in = {DEFAULT_CRON_DATABASE: "postInitSQL", app_database: "postInitApplicationSQL"}
    assert cron_database in runs_in, "no bootstrap SQL runs where pg_cron lives"
    statements = initdb[runs_in[cron_database]]
    assert "CREATE EXTENSION IF NOT EXISTS pg_cron" in statements
    if cron_database == app_database:
        assert f"GRANT USAGE ON SCHEMA cron TO {role}" in statements
    else:
        # The migration schedules from there with cron.schedule_in_database.
        for grant in GRANTS_FOR_SCHEDULE_IN_DATABASE.format(role=role).split("; "):
            assert grant in statements


def test_the_cluster_needs_an_image_with_pg_cron_and_says_so():
    assert "pg_cron is not in CNPG's default image" in CLUSTER_FILE.read_text()
    # CNPG reads the PostgreSQL major version from the tag.
    assert re.match(r"\d+", CLUSTER["spec"]["imageName"].rpartition(":")[2])


# -- docker compose ---------------------------------------------------------------------------
def test_docker_compose_db_has_the_pg_cron_settings_of_make_run_and_a_healthcheck():
    db = COMPOSE["services"]["db"]
    command = db["command"]
    assert command[0] == "postgres"
    settings = dict(
        value.split("=", 1)
        for flag, value in zip(command[1::2], command[2::2], strict=True)
        if flag == "-c"
    )
    database = db["environment"]["POSTGRES_DB"]
    assert database == APP_DATABASE
    assert settings == servers.pg_cron_settings(database)
    check = " ".join(db["healthcheck"]["test"])
    assert "SHOW cron.database_name" in check and f"grep -qx {database}" in check
    image = (ROOT / db["build"]["context"] / "Dockerfile").read_text()
    assert "postgresql-${PG_MAJOR}-cron" in image
    default = re.search(r"^ARG POSTGRES_VERSION=(\d+)$", image, re.MULTILINE).group(1)
    assert db["build"]["args"]["POSTGRES_VERSION"] == default


def test_docker_compose_runs_the_migration_in_the_project_image_like_the_job():
    (migrate,) = PROJECT_SERVICES.values()
    assert migrate["command"] == container(JOB)["command"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["profiles"], "started by `docker compose up` otherwise"


# -- the image ------------------------------------------------------------------------------
def test_the_image_is_python_slim_on_the_projects_python_with_pinned_majors():
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["requires-python"]).groups()
    for stage in STAGES:
        version = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", stage.base)
        assert version, stage.base
        assert tuple(map(int, version.groups())) >= tuple(map(int, minimum))
    assert FINAL.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert FINAL.env["PYTHONUNBUFFERED"] == "1"
    labels = " ".join(FINAL.all("LABEL"))
    assert "org.opencontainers.image.source=" in labels
    assert (
        re.search(r"^ARG VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
        == PYPROJECT["version"]
    )


def test_the_image_installs_the_project_without_extras_and_has_its_console_script():
    installs = [
        (stage, re.search(r"(\S*)/bin/pip install \.(\s|$)", run))
        for stage in STAGES
        for run in stage.all("RUN")
    ]
    ((builder, match),) = [(stage, found) for stage, found in installs if found]
    venv = match.group(1)
    # What `pip install .` reads is in the stage before it runs.
    copied = {source.rstrip("/") for _, sources, _ in builder.copies() for source in sources}
    assert {"pyproject.toml", PYPROJECT["readme"], "src"} <= copied
    # The final stage has that virtualenv on its PATH, hence alembic and the console script.
    if builder is not FINAL:
        assert (builder.name, [venv], venv) in FINAL.copies()
    assert f"{venv}/bin" in FINAL.env["PATH"].split(":")
    assert "trace-summaries" in PYPROJECT["scripts"]
    assert "alembic" in " ".join(PYPROJECT["dependencies"])


def test_the_image_holds_no_secrets_and_needs_no_database_to_build():
    text = (ROOT / "Dockerfile").read_text()
    for stage in STAGES:
        assert not {"DATABASE_URL", "PGPASSWORD"} & set(stage.env)
        for run in stage.all("RUN"):
            assert "alembic" not in run and "trace-summaries" not in run
    assert not re.search(
        r"^\s*(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN)", text, re.MULTILINE | re.IGNORECASE
    )


def test_the_build_context_keeps_local_state_out_and_what_the_image_copies_in():
    for path in (
        ".venv/bin/python",
        ".local/cluster.json",
        ".git/config",
        ".pytest_cache/v",
        ".hypothesis/examples",
        ".ruff_cache/x",
        "alembic/__pycache__",
        "alembic/versions/__pycache__",
        "src/cnpg_trace_summaries/__pycache__/cli.cpython-311.pyc",
        "src/cnpg_trace_summaries.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(DOCKERIGNORE, path), path
    for stage in STAGES:
        for origin, sources, _ in stage.copies():
            if origin is None:
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert not dockerignore_excludes(DOCKERIGNORE, source), source
