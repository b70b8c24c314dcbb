"""Where the database is, and how its errors and notices reach a person.

Used by alembic/env.py and by the console command, so that both read
``DATABASE_URL`` the same way and fail with the same one-line messages.

Neither shows a secret of the URL: normalize_url() remembers every secret in it
(url_secrets(): the passwords as typed and as SQLAlchemy and libpq read them,
and the pieces of one that holds an unencoded '@', which they take for the host),
and redact() hides them in any text shown, libpq's and the server's messages too.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, unquote, unquote_plus

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import URL, exc, make_url

NOTICE_LOG = logging.getLogger("cnpg_trace_summaries.notices")

# Schemes people paste: Heroku-style postgres://, libpq's postgresql://, and
# SQLAlchemy's explicit postgresql+psycopg://. All end up on psycopg 3.
_ACCEPTED_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")

# The query parameters libpq takes a secret in (besides the user-info's password).
SECRET_PARAMETERS = ("password", "sslpassword")
HIDDEN = "***"
# Where URL parsers cut a URL. A secret typed with an unencoded '@' is cut there, and what
# follows lands in the host (and port, database, query), which error messages repeat.
_DELIMITERS = re.compile(r"[@:/?#&=]")
# Where a URL's query starts: at a '?' followed by a parameter (a password may hold a '?').
_QUERY_START = re.compile(r"\?(?=[A-Za-z_]+=)")
_SECRET_IN_QUERY = re.compile(r"[?&](?:ssl)?password=([^&]*)", re.IGNORECASE)
# A secret shorter than this is hidden only where it stands alone, not inside a longer word:
# libpq reads "p" as the password of postgresql://app:p@ss@w0rd@host, and hiding every "p"
# would leave nothing to read.
_SHORTEST_HIDDEN_ANYWHERE = 3
# The secrets of every database URL this process has read (normalize_url): redact() hides them.
_SECRETS: set[str] = set()


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and what to do."""


class MigrationError(Exception):
    """A revision cannot go on; the message is the one line the person running it sees."""


def normalize_url(raw: str) -> URL:
    """Parse a libpq-style or SQLAlchemy-style URL and pin the psycopg 3 driver.

    Its secrets are remembered first, for redact() to hide from then on.
    """
    value = raw.strip()
    _SECRETS.update(url_secrets(value))
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in _ACCEPTED_SCHEMES:
        raise ConfigError(
            "DATABASE_URL must look like postgresql://USER:PASSWORD@HOST:PORT/DBNAME "
            f"(postgres:// and postgresql+psycopg:// work too); got {redact(value)!r}"
        )
    try:
        url = _parse(value)
    except ValueError:
        raise ConfigError(
            f"DATABASE_URL is malformed: its port is not a number: {redact(value)!r}"
        ) from None
    except exc.ArgumentError as error:
        reason = redact(" ".join(str(error).split()))
        raise ConfigError(f"DATABASE_URL is malformed ({reason}): {redact(value)!r}") from None
    return url


def _parse(value: str) -> URL:
    url = make_url("postgresql+psycopg://" + value.partition("://")[2])
    url.port  # noqa: B018  -- some SQLAlchemy versions parse the port lazily; force it now
    return url


def libpq_conninfo(url: URL) -> str:
    """``url`` as libpq takes it: a conninfo string of key=value pairs, password included.

    (Not a URL rendered again: SQLAlchemy writes a space in a query value as '+', which
    libpq reads as a plus, and a schema name with a space would be lost.)
    """
    params = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    for key, value in url.query.items():
        params[key] = value[-1] if isinstance(value, tuple) else value
    return make_conninfo(**{key: value for key, value in params.items() if value is not None})


def safe_url(url: URL) -> str:
    """``url`` to show a person: its password and every other secret hidden."""
    hidden = {name: HIDDEN for name in SECRET_PARAMETERS if name in url.query}
    shown = url.update_query_dict(hidden).render_as_string(hide_password=True)
    return redact(shown.replace(quote(HIDDEN, safe=""), HIDDEN))


def url_secrets(raw: str) -> set[str]:
    """Every secret in the database URL ``raw``, by every reading of it that matters.

    * As typed: the password of the user-info, up to the last '@' before the host (what the
      person meant), and every ``password=`` and ``sslpassword=`` of the query; each also
      percent-decoded (as libpq decodes it, and with '+' as a space, as SQLAlchemy does).
    * As read: the password and sslpassword that SQLAlchemy reads (the commands connect with
      its reading), that libpq reads in the conninfo made from it, and in ``raw`` itself.
    * A secret typed with an unencoded '@' is cut there by those parsers, which take the rest
      for the host (or port, database, query): every run of its pieces between the characters
      a URL parser cuts at is a secret too.
    """
    value = raw.strip()
    _, sep, after = value.partition("://")
    rest = after if sep else value
    query = _QUERY_START.search(rest)
    userinfo = rest[: query.start() if query else len(rest)].rpartition("@")[0]
    typed = [userinfo.partition(":")[2]] if ":" in userinfo else []
    typed += _SECRET_IN_QUERY.findall(rest)
    found: set[str] = set()
    for secret in typed:
        forms = {secret, unquote(secret), unquote_plus(secret)}
        found |= forms
        if "@" in secret:
            found.update(run for form in forms for run in _runs_of_pieces(form))
    found |= _parsed_secrets("postgresql://" + rest)
    return {secret for secret in found if secret}


def _runs_of_pieces(secret: str) -> set[str]:
    """Every part of ``secret`` that starts and ends where a URL parser may cut it."""
    cuts = [match.start() for match in _DELIMITERS.finditer(secret)]
    starts = [0, *(cut + 1 for cut in cuts)]
    ends = [*cuts, len(secret)]
    return {secret[start:end] for start in starts for end in ends if end > start}


def _parsed_secrets(libpq_url: str) -> set[str]:
    """The secrets SQLAlchemy reads in ``libpq_url``, and libpq in it and in SQLAlchemy's URL."""
    values: list[object] = []
    conninfos = [libpq_url]
    with contextlib.suppress(ValueError, exc.ArgumentError):
        url = _parse(libpq_url)
        values += [url.password, *(url.query.get(name) for name in SECRET_PARAMETERS)]
        conninfos.append(libpq_conninfo(url))
    for conninfo in conninfos:
        with contextlib.suppress(psycopg.Error):
            params = conninfo_to_dict(conninfo)
            values += [params.get(name) for name in SECRET_PARAMETERS]
    found: set[str] = set()
    for value in values:
        found.update([value] if isinstance(value, str) else value or ())
    return found


def redact(text: str) -> str:
    """``text`` with every secret of the database URLs read (normalize_url) hidden."""
    return mask(text, _SECRETS)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each run of characters that belong to one of ``secrets`` shown as ***."""
    hidden = [False] * len(text)
    for secret in secrets:
        start = text.find(secret) if secret else -1
        while start != -1:
            end = start + len(secret)
            if len(secret) >= _SHORTEST_HIDDEN_ANYWHERE or _stands_alone(text, start, end):
                hidden[start:end] = [True] * len(secret)
            start = text.find(secret, start + 1)
    return "".join(
        HIDDEN if hide else "".join(char for char, _ in run)
        for hide, run in itertools.groupby(zip(text, hidden, strict=True), key=lambda c: c[1])
    )


def _stands_alone(text: str, start: int, end: int) -> bool:
    return not (start > 0 and text[start - 1].isalnum()) and not (
        end < len(text) and text[end].isalnum()
    )


def resolve_database_url(
    environ: Mapping[str, str] | None = None, *, require_reachable_local: bool = True
) -> URL:
    """``DATABASE_URL`` when set; otherwise the local cluster of ``make run``.

    With ``require_reachable_local=False`` (``alembic --sql``, which needs only
    the dialect) a missing local cluster is not an error.
    """
    env = os.environ if environ is None else environ
    raw = env.get("DATABASE_URL", "").strip()
    if raw:
        return normalize_url(raw)
    if not in_checkout():
        if not require_reachable_local:
            return make_url("postgresql+psycopg://")
        raise ConfigError(
            "DATABASE_URL is not set: set it to the database to work on, "
            "like postgresql://USER:PASSWORD@HOST:5432/DBNAME"
        )
    # A developer's checkout: the local cluster of `make run` (imported only here).
    from cnpg_trace_summaries.dev import localdb

    local = localdb.LocalCluster.from_checkout()
    if local.is_initialised():
        if require_reachable_local and not local.is_running():
            raise ConfigError(
                "DATABASE_URL is not set and the local cluster of `make run` is stopped; "
                "start it with `make run` (or `trace-summaries local start`), or set DATABASE_URL"
            )
        return normalize_url(local.url())
    if not require_reachable_local:
        return make_url("postgresql+psycopg://")
    raise ConfigError(
        "DATABASE_URL is not set and the local cluster has not been created; "
        "run `make run` (or `trace-summaries local start`), or set DATABASE_URL"
    )


def in_checkout() -> bool:
    """Whether this package runs from a checkout of the project (``make run``'s home)."""
    return (Path(__file__).resolve().parents[2] / "alembic.ini").exists() or bool(
        os.environ.get("TRACE_SUMMARIES_LOCAL_DIR")
    )


def connection_failure(safe_url: str, error: Exception) -> str:
    """The line for a connection that failed: to where, and why in libpq's words, secrets hidden."""
    reason = " ".join(str(error).split()).removeprefix("connection failed: ")
    return redact(f"cannot connect to {safe_url}: {reason}")


def describe_database_error(error: exc.DBAPIError, safe_url: str) -> str:
    """One line a person can act on, from a SQLAlchemy-wrapped psycopg error; secrets hidden."""
    return redact(_describe_database_error(error, safe_url))


def _describe_database_error(error: exc.DBAPIError, safe_url: str) -> str:
    orig = error.orig
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if error.statement is None or (primary is None and error.connection_invalidated):
        # Failed to connect (host down, wrong password, unknown database...).
        return connection_failure(safe_url, orig)
    if primary is None:
        return f"migration failed on {safe_url}: {' '.join(str(orig).split())}"
    line = f"migration failed on {safe_url}: {primary} (SQLSTATE {orig.sqlstate})"
    if diag.message_hint:
        line += f"; hint: {' '.join(diag.message_hint.split())}"
    elif orig.sqlstate == "55P03":
        line += (
            "; another session holds a lock this step needs (a long query or refresh on "
            "otel_traces or otel_trace_summaries): try again when it is done, or allow a longer "
            "wait with -x lock_timeout=..."
        )
    return line


@contextlib.contextmanager
def install_notice_logger(driver_connection: psycopg.Connection) -> Iterator[None]:
    """Log every server NOTICE/WARNING that arrives on ``connection``.

    psycopg drops notices unless a handler is registered; the migrations use
    them to say whether pg_cron now refreshes the summaries or a person has to.
    A NOTICE with a SQLSTATE of class 01 ("warning"), which the revisions give
    to "automatic refresh is OFF", is logged at WARNING, like a WARNING.
    """

    def handler(diagnostic) -> None:
        warns = diagnostic.severity_nonlocalized == "WARNING" or (
            diagnostic.sqlstate or ""
        ).startswith("01")
        level = logging.WARNING if warns else logging.INFO
        message = diagnostic.message_primary or ""
        if diagnostic.message_hint:
            message += f" (hint: {diagnostic.message_hint})"
        NOTICE_LOG.log(level, "%s: %s", diagnostic.severity_nonlocalized, redact(message))

    driver_connection.add_notice_handler(handler)
    try:
        yield
    finally:
        driver_connection.remove_notice_handler(handler)
