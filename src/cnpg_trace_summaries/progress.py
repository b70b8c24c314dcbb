"""Progress for long work, shown to a person on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def progress_bar(label: str, stream=None) -> Callable[[int, int | None], None]:
    """A progress callback: a live bar on a terminal, a line per 10 % elsewhere."""
    stream = stream or sys.stderr
    started = time.monotonic()
    live = stream.isatty()
    last_decile = -1

    def report(done: int, total: int | None) -> None:
        nonlocal last_decile
        elapsed = time.monotonic() - started
        if not total:
            stream.write(f"{label} {done:,} ({elapsed:.1f}s)\n")
            return
        if live:
            filled = int(30 * done / total)
            bar = "#" * filled + "-" * (30 - filled)
            stream.write(f"\r{label} [{bar}] {done:,}/{total:,} ({elapsed:.1f}s)")
            if done >= total:
                stream.write("\n")
        elif (decile := 10 * done // total) > last_decile:
            last_decile = decile
            stream.write(f"{label} {done:,}/{total:,} ({elapsed:.1f}s)\n")
        stream.flush()

    return report
