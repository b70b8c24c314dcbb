"""How the SQL text names the install's schema, and how it is rendered to run.

Every object of this project is written ``@schema@.name`` and every
statement runs with ``search_path = pg_catalog, pg_temp``: nothing resolves a
name through a schema that another role may write to (a role with CREATE on
the schema could otherwise define ``to_hex(bigint)``, or an overload that
matches more closely than the built-in, and have it run as whoever runs
ours). Built-ins stay unqualified and can only be pg_catalog's.

Two renderings:

* :func:`in_schema`, for the revisions: one DO block that finds the schema
  with ``current_schema()`` when it runs, pins the path, ``EXECUTE``\\ s each
  statement through ``format()`` (so ``alembic upgrade --sql`` scripts decide
  on the server, like an online run), and puts the path back.
* :func:`for_schema`, for the live commands, which know their schema.

Function bodies are quoted with :data:`BODY`, a dollar tag longer than any
identifier can be, so no schema name, quoted into a body, can end it.
"""

from __future__ import annotations

SCHEMA = "@schema@"
SCHEMA_LITERAL = "@schema_literal@"  # the schema's name as a string literal
PINNED_PATH = "pg_catalog, pg_temp"
# NAMEDATALEN is 64: a quoted identifier holds at most 63 bytes, so it can never contain this.
BODY = "$" + "cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be" + "$"
_TEMPLATE = "$template$"
_BLOCK = "$in_schema$"


# Values chosen when a statement runs (a migration's options), as transaction-local
# settings: set by set_values() before the statements that read them with value().
VALUE_PREFIX = "cnpg_trace_summaries."


def qualified(name: str) -> str:
    """An object of ours, in the install's schema."""
    return f"{SCHEMA}.{name}"


def body(text: str) -> str:
    """A function or procedure body, dollar-quoted with :data:`BODY`."""
    if BODY in text:
        raise ValueError("a body may not contain its own dollar tag")
    return f"{BODY}{text}{BODY}"


def _format_literal(template: str) -> str:
    for tag in (_TEMPLATE, _BLOCK):
        if tag in template:
            raise ValueError(f"a statement may not contain {tag}")
    escaped = template.replace("%", "%%").replace(SCHEMA_LITERAL, "%1$L")
    return _TEMPLATE + escaped.replace(SCHEMA, "%1$I") + _TEMPLATE


def do_block(plpgsql: str, *, purpose: str, declare: str = "") -> str:
    """A DO block that runs ``plpgsql`` with the path pinned, the schema in ``target``.

    ``target`` is the schema the session's value ``schema`` names (a live
    command's, whose path is pinned), or else ``current_schema()`` when the
    block runs (a migration's); the caller's path is put back at the end. ``plpgsql`` must not RETURN (``EXIT work`` leaves it).
    ``declare`` holds its variables, initialised once the path is pinned; their
    types are resolved earlier, when PL/pgSQL compiles the block, so they are
    written schema-qualified (``pg_catalog.text``). Values chosen at run time
    (options) are never spliced in: they are read from settings (:func:`value`)
    that the caller sets first. ``purpose`` heads the statement, so that
    ``pg_stat_activity`` says what a running block does.
    """
    if "*/" in purpose:
        raise ValueError("a purpose may not end a comment")
    inner = f"\n    DECLARE{declare}" if declare else ""
    return f"""/* cnpg-trace-summaries: {purpose} */
DO {_BLOCK}
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('{VALUE_PREFIX}schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', '{PINNED_PATH}', true);
    <<work>>{inner}
    BEGIN
{plpgsql}
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
{_BLOCK}"""


def executes(templates, indent: str = "        ") -> str:
    """PL/pgSQL (in a :func:`do_block`) that runs each template in the schema ``target``."""
    return "\n".join(
        f"{indent}EXECUTE format({_format_literal(t.strip())}, target);" for t in templates
    )


def in_schema(*templates: str, purpose: str) -> str:
    """One DO block that runs ``templates`` in ``current_schema()``, with the path pinned."""
    return do_block(executes(templates), purpose=purpose)


def value(name: str) -> str:
    """SQL: the value ``name`` set for this transaction (NULL when not set)."""
    return f"current_setting('{VALUE_PREFIX}{name}', true)"


def set_values(names, placeholder: str = ":{}") -> str:
    """SQL that sets each value of ``names`` from a bind parameter of the same name
    (``placeholder``: SQLAlchemy's ``:{}`` or psycopg's ``%({})s``)."""
    return "SELECT " + ", ".join(
        f"pg_catalog.set_config('{VALUE_PREFIX}{name}', {placeholder.format(name)}, true)"
        for name in names
    )


def quote_ident(name: str) -> str:
    """``name`` as a quoted identifier (always quoted: correct for every name, reserved or not)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a string literal (standard_conforming_strings, on since PostgreSQL 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def for_schema(template: str, schema: str, *, parameters: bool = False) -> str:
    """``template`` with the schema written in; ``parameters``: '%' doubled for psycopg."""
    identifier, literal = quote_ident(schema), quote_literal(schema)
    if parameters:
        identifier, literal = identifier.replace("%", "%%"), literal.replace("%", "%%")
    return template.replace(SCHEMA_LITERAL, literal).replace(SCHEMA, identifier)
