"""Freeze the SQL of the head revision: ``python -m cnpg_trace_summaries.dev.freeze FILE``.

A revision carries the SQL it runs, so that it does forever what it did on
the day it was released. This renders what the package defines today (the
modes of :mod:`cnpg_trace_summaries.modes`, their objects, the job) as Python
constants and writes them between the markers of a revision file.

To change what is installed: change the package, write a new revision that
moves installed databases forward, and freeze into it (``--print`` shows the
block). tests/test_revisions.py fails while the head revision's block and
this rendering differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnpg_trace_summaries.modes import MODES, install_statements
from cnpg_trace_summaries.sql import common, cron, lifecycle

BEGIN = "# -- frozen SQL: rendered by `python -m cnpg_trace_summaries.dev.freeze`; never edit --"
END = "# -- end of the frozen SQL --"


def constants() -> dict[str, object]:
    """The head revision's SQL, by name: strings, or a mapping of mode to statements."""
    return {
        "PREPARE": lifecycle.PREPARE,
        "DECIDE": lifecycle.DECIDE,
        "INSTALL": {
            name: tuple(lifecycle.install_step(s) for s in install_statements(mode))
            for name, mode in MODES.items()
        },
        "BUILD": {name: mode.build for name, mode in MODES.items()},
        "GRANT_READER": common.GRANT_READER,
        "SCHEDULE_HERE": cron.SCHEDULE_HERE,
        "JOB": cron.JOB,
        "UNINSTALL": lifecycle.UNINSTALL,
        "UNSCHEDULE_HERE": cron.UNSCHEDULE_HERE,
    }


def literal(text: str, indent: str = "") -> str:
    """``text`` as a Python literal that reads like the SQL it holds."""
    if '"""' in text or text.endswith(("\\", '"')):
        return repr(text)
    return 'r"""' + text + '"""'


def render_value(value: object, indent: str = "") -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return literal(value)
    inner = indent + "    "
    if isinstance(value, tuple):
        items = "".join(f"{inner}{render_value(item, inner)},\n" for item in value)
        return f"(\n{items}{indent})"
    if isinstance(value, dict):
        items = "".join(
            f"{inner}{json.dumps(key)}: {render_value(item, inner)},\n"
            for key, item in value.items()
        )
        return f"{{\n{items}{indent}}}"
    raise TypeError(type(value))


def block() -> str:
    """The frozen block, markers included."""
    body = "\n\n".join(f"{name} = {render_value(value)}" for name, value in constants().items())
    return f"{BEGIN}\n{body}\n{END}"


def frozen_in(path: Path) -> str:
    """The frozen block of a revision file, markers included."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def write(path: Path) -> bool:
    """Freeze into ``path``; True when it changed."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + block() + text[end:]
    if updated == text:
        return False
    path.write_text(updated)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnpg_trace_summaries.dev.freeze")
    parser.add_argument("revision", type=Path, nargs="?", help="the revision file to write into")
    parser.add_argument("--print", action="store_true", help="print the block instead")
    args = parser.parse_args(argv)
    if args.print or args.revision is None:
        sys.stdout.write(block() + "\n")
        return 0
    changed = write(args.revision)
    sys.stderr.write(f"{args.revision}: {'frozen' if changed else 'already frozen'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
