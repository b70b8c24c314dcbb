"""Major-version imports in CNPG's layout: the oldest major's pg_dump of an app database,
restored by the newest major's pg_restore, in both modes, three ways.

Both servers keep pg_cron in ``postgres`` and the summaries in a database owned by a
non-superuser login (CNPG's `app`), which has the grants to schedule its job there. A
dump holds none of ``postgres``: the job stays behind, and ``trace-summaries repair``
brings it back. The ways: the whole dump at once; its schema, then its data (how a
subscriber is prepared); and ``--no-privileges``, which drops every grant. After the
repair the summaries are exact, the job runs, the grants are back, and new spans are
summarized on the new major.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from cnpg_trace_summaries.contract import DEFAULT_CRON_DATABASE, MODES, SUMMARIES
from cnpg_trace_summaries.dev import servers
from tests.support.commands import run_cli
from tests.support.cron import app_database, first_run_after, hurry, job_id
from tests.support.database import Database
from tests.support.incremental import traces_sql
from tests.support.roles import login_role
from tests.support.servers import PASSWORD, local_server, plain_installations

WAYS = {
    "whole": [[]],
    "schema_then_data": [["--schema-only"], ["--data-only"]],
    "no_privileges": [["--no-privileges"]],
}
READER = "SELECT has_table_privilege(%s, %s, 'SELECT')"
PUBLIC_MAY_EXECUTE = """
SELECT count(*) FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema() AND p.proname LIKE 'otel_trace_summaries%%'
  AND has_function_privilege('public', p.oid, 'EXECUTE')
"""


def cnpg_server(stack: ExitStack, name: str, install: servers.Installation):
    return stack.enter_context(
        local_server(name, install, pg_cron_database=DEFAULT_CRON_DATABASE, password=PASSWORD)
    )


@pytest.fixture(scope="module")
def majors() -> Iterator[tuple]:
    """A server of the oldest major and one of the newest, both in CNPG's layout."""
    installs = plain_installations()
    assert len(installs) >= 2, "an import between majors needs two of them installed"
    newest, oldest = installs[0], installs[-1]
    with ExitStack() as stack:
        yield (
            cnpg_server(
                stack, "import-from", servers.find_installation(major=oldest.major, pg_cron=True)
            ),
            cnpg_server(
                stack, "import-into", servers.find_installation(major=newest.major, pg_cron=True)
            ),
        )


def run(program: str, *args: str) -> None:
    result = subprocess.run([program, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def cli(database: Database, *args: str) -> subprocess.CompletedProcess:
    result = run_cli(*args, DATABASE_URL=database.url)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def the_job_runs(database: Database) -> None:
    """The job, scheduled again where pg_cron lives, runs and succeeds."""
    cron = Database(database.server, DEFAULT_CRON_DATABASE)
    jobid = job_id(cron.connect, database.job_name)
    assert jobid is not None, "no job after the repair"
    started = cron.scalar("SELECT now()")
    hurry(cron.connect, jobid)
    run_ = first_run_after(cron.connect, jobid, started)
    assert run_["status"] == "succeeded", run_


@pytest.mark.pg_cron_tick
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("mode", MODES)
def test_an_import_into_the_newest_major_is_whole_again_after_repair(majors, mode, way, tmp_path):
    source_server, target_server = majors
    role, reader = f"app_{uuid.uuid4().hex[:8]}", f"reader_{uuid.uuid4().hex[:8]}"
    dump = tmp_path / "app.dump"
    with ExitStack() as stack:
        for server in majors:
            stack.enter_context(login_role(server, name=reader))
        source = app_database(stack, source_server, role)
        source.migrate("upgrade", "head", x={"summaries": mode, "reader_role": reader})
        source.execute(traces_sql("before", 300))
        cli(source, "refresh")
        run(source_server.install.program("pg_dump"), "-Fc", "-f", str(dump), source.url)

        target = app_database(stack, target_server, role)
        for args in WAYS[way]:
            run(target_server.install.program("pg_restore"), *args, "-d", target.url, str(dump))

        repaired = cli(target, "repair", "--reader-role", reader, "--json")
        assert json.loads(repaired.stdout)["changes"], repaired.stdout
        assert json.loads(cli(target, "repair", "--json").stdout)["changes"] == []  # all done
        the_job_runs(target)
        assert run_cli("status", DATABASE_URL=target.url).returncode == 0
        assert target.scalar(READER, (reader, SUMMARIES))
        assert target.scalar(PUBLIC_MAY_EXECUTE) == 0
        assert target.scalar(f"SELECT count(*) FROM {SUMMARIES}") == 300

        target.execute(traces_sql("after", 20))  # captured (or refreshed) on the new major
        cli(target, "refresh")
        cli(target, "verify")
        assert target.scalar(f"SELECT count(*) FROM {SUMMARIES}") == 320
