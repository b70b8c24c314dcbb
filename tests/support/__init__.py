"""Helpers the test modules import: servers, databases, commands, data, pg_cron runs, roles.

``tests/conftest.py`` holds the fixtures built from these; nothing here is a fixture.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
