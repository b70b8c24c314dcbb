"""Trace summaries for an OpenTelemetry span store on PostgreSQL / CloudNativePG.

The migrations live in ``alembic/``; this package holds what the migrations,
the console command, the tests and the benchmark share: where the database is
(:mod:`.database`), the local cluster of ``make run`` (:mod:`.localdb`), the
names of the schema objects (:mod:`.schema`), realistic demo spans
(:mod:`.demo`) and the queries that read the summaries (:mod:`.summaries`).
"""

__version__ = "0.1.0"
