"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

What it does
    (the objects it creates or changes, by name, in both modes: view and incremental)

Why
    (the reason, and anything a reviewer must know)

What blocks, and for how long
    (every lock a writer or a reader may wait for, and how long; measured where it matters)

What a kill leaves behind, and what repairs it
    (as a rule: upgrading again)

Downgrade
    (what it puts back)

Before you write it (docs/ARCHITECTURE.md, "Writing the next revision"; delete this part):
    * Import alembic, sqlalchemy, collections.abc, logging, time and
      `from cnpg_trace_summaries import migration_api as api` (options, values for the DO
      blocks, where pg_cron lives, one way to fail), and nothing else of the package: its code
      moves on, a released revision must not (tests/test_revisions.py).
    * Carry the SQL it runs, frozen in this file. Change the package (sql/, modes.py), which
      keeps the current definition; move HEAD_REVISION in contract.py and HEAD in
      tests/support/revisions.py to this revision; end this file with the two markers of
      cnpg_trace_summaries.dev.freeze; adapt its constants() to the statements this revision
      runs; then run `python -m cnpg_trace_summaries.dev.freeze alembic/versions/<this file>`.
      Never edit the frozen block by hand.
    * Move installed databases forward in both modes. Decide in DO blocks, on the server, from
      the record in the relation's comment (mode=, refresh_interval=), so that an
      `alembic upgrade head --sql` script decides the same way. Keep the interval, the grants
      and the job.
    * Migrations run while collectors keep writing to otel_traces. env.py sets lock_timeout, so
      a statement that waits too long fails the migration instead of stalling ingest; never
      hold a lock that writers wait for beyond a short statement.
    * Write a real downgrade. A released revision is never edited: fix it in a new revision.
    * Regenerate the golden scripts and read the diff:
      UPDATE_GOLDEN=1 pytest tests/test_revisions.py -k golden
"""

from collections.abc import Sequence

from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade schema."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade schema."""
    ${downgrades if downgrades else "pass"}
