"""Revisions that never change under a user: each carries the SQL it runs.

* A revision imports alembic, SQLAlchemy, logging and the package's stable
  mechanics (``cnpg_trace_summaries.migration_api``), never the package's SQL.
* The head revision's frozen SQL is what the package renders today: changing
  the definition (even by one character) fails here until a new revision
  freezes it (``python -m cnpg_trace_summaries.dev.freeze FILE``).
* ``alembic upgrade head --sql`` writes, for each mode, the script in
  tests/golden/ (regenerate with ``UPDATE_GOLDEN=1``, and read the diff).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

from cnpg_trace_summaries import contract
from cnpg_trace_summaries.dev import freeze
from tests.support import ROOT
from tests.support.commands import environment
from tests.support.revisions import FIRST, HEAD

VERSIONS = ROOT / "alembic/versions"
GOLDEN = ROOT / "tests/golden"
# What a revision may import: the standard library it needs, the migration tools, and the
# package's stable mechanics.
REVISION_IMPORTS = {
    "collections.abc",
    "alembic",
    "sqlalchemy",
    "logging",
    "time",
    "cnpg_trace_summaries.migration_api",
}


def revision_file(revision: str):
    (path,) = VERSIONS.glob(f"{revision}_*.py")
    return path


def imported_modules(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("revision", [FIRST, HEAD])
def test_revisions_import_nothing_but_alembic_and_the_migration_api(revision):
    for module in imported_modules(revision_file(revision)):
        assert any(module == m or module.startswith(f"{m}.") for m in REVISION_IMPORTS), module


def test_the_head_revision_carries_the_sql_the_package_renders_today():
    assert contract.HEAD_REVISION == HEAD
    assert freeze.frozen_in(revision_file(HEAD)) == freeze.block(), (
        "the package's SQL changed: write a new revision that moves installed databases "
        "forward, and freeze into it (python -m cnpg_trace_summaries.dev.freeze FILE)"
    )


def test_a_one_character_change_of_the_definition_fails_the_frozen_check(tmp_path):
    """summary.py with one character changed, in a copy of the package: its rendering differs."""
    package = ROOT / "src/cnpg_trace_summaries"
    copy = tmp_path / "cnpg_trace_summaries"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    definition = copy / "sql/summary.py"
    definition.write_text(definition.read_text().replace("max(", "max (", 1))
    rendered = subprocess.run(
        [sys.executable, "-c", "from cnpg_trace_summaries.dev.freeze import block; print(block())"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.rstrip("\n")
    assert rendered != freeze.frozen_in(revision_file(HEAD))


def offline_script(mode: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"summaries={mode}", "upgrade", "head", "--sql"],
        cwd=ROOT,
        env=environment(DATABASE_URL=None, TRACE_SUMMARIES_LOCAL_DIR=str(ROOT / ".no-local")),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("mode", ["view", "incremental"])
def test_the_sql_script_of_each_mode_is_the_golden_one(mode):
    golden = GOLDEN / f"upgrade-head-{mode}.sql"
    script = offline_script(mode)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(script)
    assert script == golden.read_text(), f"`alembic upgrade head --sql` changed: see {golden}"
