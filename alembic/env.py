"""Alembic environment for cnpg-trace-summaries.

Close to Alembic's generic template, with four additions:

* the URL comes from ``DATABASE_URL`` (or the local ``make run`` cluster), not
  from alembic.ini, and a connection handed in through
  ``config.attributes["connection"]`` (tests, pytest-alembic) is used as is;
* ``lock_timeout`` is set, because migrations run while collectors keep
  writing spans: a statement that would queue behind (and in front of) the
  live ingest fails fast instead;
* server NOTICEs raised by the revisions (pg_cron scheduled, or "manual refresh
  required") are logged, not dropped, so the person running
  ``alembic upgrade head`` sees them;
* connection and database errors end with one clear line and exit status 1,
  not a traceback.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from sqlalchemy import Engine, create_engine, exc, pool, text

from alembic import context
from cnpg_trace_summaries.database import (
    ConfigError,
    describe_database_error,
    install_notice_logger,
    resolve_database_url,
    validate_lock_timeout,
)

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("alembic.env")

# No ORM models: every object is created by hand-written SQL in the revisions.
target_metadata = None

TRANSACTION_PER_MIGRATION = config.get_main_option("transaction_per_migration", "true") == "true"


def lock_timeout() -> str:
    """``-x lock_timeout=...`` wins over alembic.ini; validated, never pasted raw."""
    raw = context.get_x_argument(as_dictionary=True).get(
        "lock_timeout", config.get_main_option("lock_timeout", "5s")
    )
    return validate_lock_timeout(raw)


def run_migrations_offline() -> None:
    """Write the migrations as a SQL script (``alembic upgrade head --sql``).

    The pg_cron decision is a DO block evaluated by the server, so the script
    gives the same result as an online upgrade when a DBA applies it with psql.
    """
    try:
        url = resolve_database_url(require_reachable_local=False)
    except ConfigError as error:
        raise SystemExit(f"alembic: {error}") from None
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=TRANSACTION_PER_MIGRATION,
    )
    context.execute(f"SET lock_timeout = '{lock_timeout()}'")
    with context.begin_transaction():
        context.run_migrations()


def run_on_connection(connection, *, owned: bool) -> None:
    connection.execute(text(f"SET lock_timeout = '{lock_timeout()}'"))
    if owned:
        # SET opened a transaction; commit it so that each migration starts
        # a transaction of its own. An injected connection is left as it is.
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=TRANSACTION_PER_MIGRATION,
    )
    with install_notice_logger(connection), context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against a live database."""
    injected = config.attributes.get("connection")
    if isinstance(injected, Engine):  # pytest-alembic may hand in an engine
        with injected.connect() as connection:
            run_on_connection(connection, owned=True)
        return
    if injected is not None:
        run_on_connection(injected, owned=False)
        return

    try:
        url = resolve_database_url()
    except ConfigError as error:
        raise SystemExit(f"alembic: {error}") from None
    connectable = create_engine(url, poolclass=pool.NullPool)
    safe_url = url.render_as_string(hide_password=True)
    try:
        with connectable.connect() as connection:
            run_on_connection(connection, owned=True)
    except exc.DBAPIError as error:
        raise SystemExit(f"alembic: {describe_database_error(error, safe_url)}") from None


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
