"""Trace summaries for an OpenTelemetry span store on PostgreSQL / CloudNativePG.

The package in layers (docs/ARCHITECTURE.md); a module imports from its own
layer or the ones listed before it:

1. names: :mod:`.contract` (every name users' databases hold), :mod:`.interval`
   (the refresh interval), :mod:`.options` (the ``-x`` options and their
   environment variables);
2. SQL text, pure, over an ``@schema@`` placeholder: :mod:`.sql` (render,
   summary, common, view, incremental, cron, lifecycle, metrics);
3. live-database work: :mod:`.database`, :mod:`.place`, :mod:`.migrating`,
   :mod:`.migration_api` (all a revision may use), :mod:`.modes`,
   :mod:`.pgcron`, :mod:`.summaries`, :mod:`.health`, :mod:`.switch`,
   :mod:`.schedule`, :mod:`.repair`, :mod:`.output`, :mod:`.progress`;
4. entry points: :mod:`.cli` (``trace-summaries``), and outside the package
   ``alembic/env.py`` and the revisions, which carry their SQL frozen;
5. development tools: :mod:`.dev` (servers, the local cluster of ``make run``,
   demo spans, freezing a revision, the monitoring files, building
   extensions), which ``alembic upgrade`` and ``trace-summaries status`` never
   import (a test proves it).
"""

__version__ = "0.1.0"
