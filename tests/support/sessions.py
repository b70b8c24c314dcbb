"""Sessions in the background: a statement in a thread of its own, and who waits on a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.database import Database
from tests.support.incremental import refresh


def waiting_on_a_lock(database: Database, pid: int) -> bool:
    return (
        database.scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
        == "Lock"
    )


class Background:
    """``call(conn)`` (by default a refresh) in a thread, on an autocommit connection of its own."""

    def __init__(
        self, database: Database, call: Callable[[psycopg.Connection], Any] = refresh
    ) -> None:
        self.conn = database.connect(autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.outcome: Any = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(call,))
        self.thread.start()

    def _run(self, call) -> None:
        try:
            self.outcome = call(self.conn)
        except Exception as error:  # reported by join()
            self.error = error

    def wait_until_blocked(self, database: Database) -> None:
        deadline = time.monotonic() + 30
        while not waiting_on_a_lock(database, self.pid):
            assert self.thread.is_alive(), f"it ended instead: {self.error}"
            assert time.monotonic() < deadline, "it never waited on a lock"
            time.sleep(0.01)

    def wait(self) -> Exception | None:
        """Wait for ``call`` to end, its session still open; what it raised, if anything."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "it was still running after a minute"
        return self.error

    def join(self) -> Any:
        """What ``call`` returned; raises what it raised."""
        self.wait()
        self.conn.close()
        if self.error is not None:
            raise self.error
        return self.outcome
