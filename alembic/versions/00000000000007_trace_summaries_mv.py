"""otel_trace_summaries: one pre-computed row per trace, refreshed by pg_cron.

Revision ID: 00000000000007
Revises: 00000000000001
Create Date: 2026-11-25

What it does
    * By default (``-x summaries=view``), the spec's design: the materialized
      view ``otel_trace_summaries`` over the spans of the last 7 days,
      populated at once and ANALYZEd, with the three indexes the dashboard's
      listing queries use (the unique one on ``trace_id``, a plain column with
      no WHERE, is what ``REFRESH ... CONCURRENTLY`` needs), and autovacuum set
      for its churn. A pg_cron job, ``*/2 * * * *``, runs
      ``REFRESH MATERIALIZED VIEW CONCURRENTLY <schema>.otel_trace_summaries``.
    * With ``-x summaries=incremental`` (or TRACE_SUMMARIES_MODE): a table of
      the same name, columns, semantics and index names, kept exact by
      triggers on otel_traces and a refresh that recomputes only what changed
      (cnpg_trace_summaries/incremental_mode.py); the job runs
      ``CALL <schema>.otel_trace_summaries_refresh()``.
    * The job is named by cnpg_trace_summaries.contract's rule, upserted by
      name, and scheduled where pg_cron lives (cnpg_trace_summaries/pgcron.py):
      in this database, or in another one through cron.schedule_in_database,
      which commits on its own and is therefore the last step.
    * Where no job can be scheduled, the view (or table) is still created, and
      a NOTICE (logged at WARNING) says that automatic refresh is OFF and what
      to run or grant; ``-x require_refresh=yes`` fails the upgrade instead.
    * ``-x reader_role=NAME`` grants SELECT on the summaries to that role.

Semantics of a row: cnpg_trace_summaries/summary_sql.py and the README.

Steps, and what a kill or a failure leaves behind
    1. What an interrupted run (or switch) left is removed, in a transaction
       of its own: the capture triggers lock otel_traces only for as long as
       they take to drop, never for the build that follows.
    2. View mode: one transaction creates, fills and indexes the view, grants
       ``reader_role``, and schedules the job where pg_cron lives in this
       database; a failure or a kill leaves nothing, and the revision is not
       recorded.
    3. Incremental mode: one transaction creates the table (empty), grants
       ``reader_role``, schedules the job where pg_cron lives in this
       database, and creates the helper tables, functions and capture
       triggers: a failure of any of them (a missing role, ``require_refresh``
       without a job) leaves nothing. Then the first full build commits range
       by range; a job that runs meanwhile finds the refresh lock taken (or,
       before the build takes it, does the build itself). A kill from here on
       leaves the mode installed with part of its summaries, the revision not
       recorded; upgrading again removes it (step 1) and builds it again.
    4. Where pg_cron lives in another database, the job is scheduled last,
       through cron.schedule_in_database, which commits on its own. When that
       fails with ``require_refresh=yes``, what steps 2 and 3 installed is
       removed again. A kill just before the final commit leaves a job whose
       runs fail until upgrading again, which upserts the same job.

Downgrade
    Removes whichever mode is installed, completely (relation, triggers,
    functions, helper tables), under ``lock_timeout``, and then the job: in this
    database in the same transaction, or in pg_cron's database as the last
    step, so that a downgrade that fails leaves both the summaries and their
    job. It waits for a running refresh (the refresh lock) and for readers of
    the summaries before it drops the capture triggers, so that ingest waits
    only for the drop itself, never for a refresh or a dashboard's query; when
    one of them holds on past ``lock_timeout`` it fails and changes nothing.
    pg_cron itself is never dropped.

Why the decisions are DO blocks
    Whether pg_cron is here is decided by the server when the statement runs,
    so ``alembic upgrade head --sql`` writes a script that gives the same
    result when a DBA applies it with psql.
"""

import logging
from collections.abc import Sequence

from alembic import context, op

from cnpg_trace_summaries import incremental_mode, modes, options, pgcron, view_mode
from cnpg_trace_summaries.contract import FALLBACK_REFRESHER, SUMMARIES
from cnpg_trace_summaries.database import MigrationError

# Logged like the server's NOTICEs (see env.py), so the person upgrading sees them.
NOTICES = logging.getLogger("cnpg_trace_summaries.notices")

revision: str = "00000000000007"
down_revision: str | Sequence[str] | None = "00000000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# {role} is an identifier quoted by the dialect, never pasted as it was given.
GRANT_READER = "GRANT SELECT ON otel_trace_summaries TO {role}"


def execute(statements: list[str]) -> None:
    for statement in statements:
        op.execute(statement)


def raw_connection():
    """The psycopg connection under alembic's, in its transaction; None in ``--sql`` mode."""
    if context.is_offline_mode():
        return None
    return op.get_bind().connection.driver_connection


def upgrade() -> None:
    """Create the summaries in the chosen mode, then schedule their refresh."""
    mode = options.from_alembic("summaries")
    require_refresh = options.from_alembic("require_refresh") == "yes"
    cron_database = options.from_alembic("cron_database") or None
    conn = raw_connection()
    location = pgcron.locate(conn, cron_database or "") if conn is not None else None
    if require_refresh and location is not None and location.database is None:
        raise MigrationError(
            "no pg_cron job can refresh otel_trace_summaries (require_refresh=yes): "
            f"{location.how}; nothing was changed"
        )

    # Step 1, committed on its own (one DO statement).
    with op.get_context().autocommit_block():
        op.execute(modes.PREPARE)
    # Steps 2 and 3: one transaction, which any failure rolls back whole.
    if mode == "view":
        execute(view_mode.install())
    else:
        execute(incremental_mode.create_summaries())
    role = options.from_alembic("reader_role")
    if role:
        quoted = op.get_context().dialect.identifier_preparer.quote_identifier(role)
        op.execute(GRANT_READER.format(role=quoted))
    if not pgcron.elsewhere(location):
        op.execute(
            pgcron.schedule_here_sql(
                mode, require_refresh=require_refresh, cron_database=cron_database
            )
        )
    if mode == "incremental":
        execute(incremental_mode.create_machinery())  # the triggers last: they lock otel_traces
        with op.get_context().autocommit_block():
            op.execute(incremental_mode.BUILD)
        op.execute(f"ANALYZE {SUMMARIES}")
    if not pgcron.elsewhere(location):
        return
    # Step 4, last: it commits in another database, outside this migration's transaction.
    try:
        NOTICES.info("NOTICE: %s", pgcron.schedule_elsewhere(conn, location, mode))
    except pgcron.CronError as error:
        if require_refresh:
            if mode == "incremental":  # committed by the build: remove it again
                with op.get_context().autocommit_block():
                    op.execute(modes.UNINSTALL)
            raise MigrationError(f"{error} (require_refresh=yes: nothing was changed)") from None
        NOTICES.warning(
            "NOTICE: %s. Until then automatic refresh of otel_trace_summaries is OFF and manual "
            "refresh is required: %s",
            error,
            FALLBACK_REFRESHER,
        )


def downgrade() -> None:
    """Remove whichever mode is installed, then its job; pg_cron itself stays."""
    conn = raw_connection()
    cron_database = options.from_alembic("cron_database") or ""
    location = pgcron.locate(conn, cron_database) if conn is not None else None
    op.execute(modes.UNINSTALL)
    op.execute(pgcron.unschedule_here_sql(offline=conn is None))
    if pgcron.elsewhere(location):
        # Last: it commits in another database. A failure raises, and rolls the drop back.
        try:
            removed = pgcron.unschedule_elsewhere(conn, location)
        except pgcron.CronError as error:
            raise MigrationError(str(error)) from None
        if removed:
            NOTICES.info("NOTICE: %s", removed)
    elif location is not None and (warning := pgcron.not_found_warning(location)):
        NOTICES.warning("NOTICE: %s", warning)
