"""Alembic environment for cnpg-trace-summaries.

Close to Alembic's generic template, with these additions:

* the URL comes from ``DATABASE_URL`` (or the local ``make run`` cluster), not
  from alembic.ini, and a connection or engine handed in through
  ``config.attributes["connection"]`` (tests, pytest-alembic) is used as is;
* the version table is ``cnpg_trace_summaries_version``, this project's own, so
  that an application's Alembic history in the same database is left alone;
* ``lock_timeout`` is set, because migrations run while collectors keep
  writing spans: a statement that would queue behind (and in front of) the
  live ingest fails fast instead;
* one migrator at a time per schema: an advisory lock is taken before the
  version table is read (see cnpg_trace_summaries.migrating);
* server NOTICEs raised by the revisions are logged, not dropped, and those
  that say the summaries will not be refreshed at WARNING;
* every ``-x`` option is validated (cnpg_trace_summaries.options), and
  connection and database errors end with one clear line and exit status 1.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, Engine, create_engine, exc, pool

from cnpg_trace_summaries import migrating, options
from cnpg_trace_summaries.contract import VERSION_TABLE
from cnpg_trace_summaries.database import (
    ConfigError,
    MigrationError,
    describe_database_error,
    install_notice_logger,
    resolve_database_url,
    safe_url,
)

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("alembic.env")
NOTICES = logging.getLogger("cnpg_trace_summaries.notices")

# No ORM models: every object is created by hand-written SQL in the revisions.
target_metadata = None

TRANSACTION_PER_MIGRATION = config.get_main_option("transaction_per_migration", "true") == "true"


def option(name: str) -> str:
    """A validated ``-x`` option (or its environment variable); bad input ends the command."""
    try:
        return options.from_alembic(name)
    except options.OptionError as error:
        raise SystemExit(f"alembic: {error}") from None


def check_options() -> None:
    unknown = sorted(set(context.get_x_argument(as_dictionary=True)) - set(options.OPTIONS))
    if unknown:
        raise SystemExit(
            f"alembic: unknown -x option {', '.join(unknown)}; "
            f"known: {', '.join(options.OPTIONS)} (see the README)"
        )
    for name in options.OPTIONS:
        option(name)


def configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        transaction_per_migration=TRANSACTION_PER_MIGRATION,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Write the migrations as a SQL script (``alembic upgrade head --sql``).

    The pg_cron decisions are DO blocks evaluated by the server, so the script
    gives the same result as an online upgrade when a DBA applies it with psql.
    """
    try:
        url = resolve_database_url(require_reachable_local=False)
    except ConfigError as error:
        raise SystemExit(f"alembic: {error}") from None
    configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    for statement in migrating.offline_preamble(option("lock_timeout")):
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def run_on_connection(connection: Connection) -> None:
    """Session settings, the migration lock, then the revisions, one transaction each."""
    driver = connection.connection.driver_connection
    try:
        migrating.configure_session(driver, option("lock_timeout"))
        reader_role = option("reader_role")
        problem = reader_role and migrating.missing_role(driver, reader_role)
        if problem:
            raise SystemExit(f"alembic: {problem}")
        schema = migrating.current_schema(driver)
        with migrating.migration_lock(driver, schema, wait=option("migration_lock_wait")):
            configure(connection=connection)
            with install_notice_logger(driver), context.begin_transaction():
                context.run_migrations()
            explicit = {name for name in options.OPTIONS if options.given_to_alembic(name)}
            given = {name: option(name) for name in options.OPTIONS}
            for warning in migrating.warnings(driver, explicit, given):
                NOTICES.warning("%s", warning)
    except (migrating.MigrationLockBusyError, MigrationError) as error:
        raise SystemExit(f"alembic: {error}") from None


def run_migrations_online() -> None:
    """Run the migrations against a live database."""
    injected = config.attributes.get("connection")
    if isinstance(injected, Engine):  # pytest-alembic hands in an engine
        with injected.connect() as connection:
            run_on_connection(connection)
        return
    if injected is not None:
        run_on_connection(injected)
        return

    try:
        url = resolve_database_url()
    except ConfigError as error:
        raise SystemExit(f"alembic: {error}") from None
    connectable = create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={"application_name": migrating.APPLICATION_NAME},
    )
    try:
        with connectable.connect() as connection:
            run_on_connection(connection)
    except exc.DBAPIError as error:
        raise SystemExit(f"alembic: {describe_database_error(error, safe_url(url))}") from None


check_options()
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
