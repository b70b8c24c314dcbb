"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

What it does
    (the objects it creates or changes, by name)

Why
    (the reason, and anything a reviewer must know)

Before you write it:
    * Migrations run while collectors keep writing to otel_traces. Do not hold
      a lock on a hot table for long: env.py sets lock_timeout, so a statement
      that waits too long fails the migration instead of stalling ingest.
    * Keep SQL in module-level constants below, frozen here; import nothing from
      the cnpg_trace_summaries package, whose code moves on.
    * One statement per op.execute; name every object explicitly.
    * Write a real downgrade. A released revision is never edited: fix it in a
      new revision.
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
