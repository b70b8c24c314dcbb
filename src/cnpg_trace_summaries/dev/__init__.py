"""Development tools: starting PostgreSQL servers, the local cluster of ``make run``, demo spans.

Used by ``make run``, the tests and the benchmark. The runtime (``alembic
upgrade``, ``trace-summaries status`` and the other commands an operator runs
against a real database) never imports this package; a test proves it.
"""
