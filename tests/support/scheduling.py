"""pytest-xdist scheduling: one unit of work per test module and server.

A module's tests on one server share its module-scoped data (a loaded trace
store, say), so they must run on one worker; the same module on another
server can run on another. xdist's own ``loadgroup`` would do this from
``xdist_group`` marks, but it writes the group into ``item._nodeid``, which
pytest 9.2 no longer reads, so its groups are silently lost and every test
is scheduled on its own. This scheduler groups by the node id instead.
"""

from __future__ import annotations

import re

from xdist.scheduler import LoadScopeScheduling

# The server's label in a test id: [pg15], [pg18-app-public], [pg15--x], [external].
_SERVER = re.compile(r"\[(?:[^\]]*?-)??(pg\d+|external)(?=[-\]])")


def scope(nodeid: str) -> str:
    """The unit a test belongs to: its module, and the server it runs on when it names one."""
    module, _, rest = nodeid.partition("::")
    found = _SERVER.search(rest)
    return f"{module}[{found.group(1)}]" if found else module


class ModuleAndServerScheduling(LoadScopeScheduling):
    """Units of work in the collection's order, which conftest makes: the pg_cron tick waits
    first (xdist's own reordering, largest units first, would put them anywhere)."""

    def __init__(self, config, log=None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return scope(nodeid)
