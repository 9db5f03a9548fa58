"""Opening connections: one place that turns a DSN choice into psycopg connections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgwatch_cli import config, embedded
from pgwatch_cli.config import DsnChoice
from pgwatch_cli.errors import DatabaseUnreachable, UnsupportedDatabase
from pgwatch_cli.text import first_line

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

# Dead peers are noticed by the kernel within ~10 s instead of the default two hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
CONNECT_TIMEOUT_S = 5


def resolve(choice: DsnChoice) -> str:
    """The concrete connection string, starting the embedded server when that is the choice."""
    if choice.embedded:
        return embedded.start(config.bookwatch_home())
    return choice.dsn


def _params(dsn: str, application_name: str) -> dict[str, Any]:
    import psycopg.conninfo

    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, **KEEPALIVES}
    if "application_name" not in psycopg.conninfo.conninfo_to_dict(dsn):
        params["application_name"] = application_name
    return params


def _unreachable(dsn: str, exc: Exception) -> DatabaseUnreachable:
    # libpq's first line names the failure (refused, timeout, auth) without the password,
    # after a preamble naming the server, which we say our way.
    reason = first_line(exc).rsplit("failed: ", 1)[-1].strip()
    return DatabaseUnreachable(
        f"Cannot connect to PostgreSQL at {config.describe(dsn)}: {reason}", reason=reason
    )


def unreachable_hint(reason: str, choice: DsnChoice) -> str:
    """What to check, by cause, naming where the connection settings came from."""
    where = choice.where()
    lowered = reason.lower()
    if "password" in lowered or "authentication" in lowered:
        return f"Check the user and password in {where}."
    if "does not exist" in lowered and "database" in lowered:
        return f"Check the database name in {where}, or create that database."
    if "no such file or directory" in lowered or "socket" in lowered:
        return f"No server socket where {where} points: is the server running, is the path right?"
    if "refused" in lowered:
        return f"Nothing listens where {where} points: is the server running on that host/port?"
    if "resolve" in lowered or "translate host" in lowered:
        return f"Unknown host name in {where}."
    if "timeout" in lowered or "timed out" in lowered:
        return f"No answer from the host in {where} (firewall? wrong address?)."
    return f"Check the server and {where}."


def _encoding_problem(info: psycopg.ConnectionInfo) -> UnsupportedDatabase | None:
    if info.parameter_status("server_encoding") != "SQL_ASCII":
        return None
    return UnsupportedDatabase(
        f"Database {info.dbname!r} uses encoding SQL_ASCII (bytes without a character set); "
        "bookwatch needs UTF-8 text for events and names.",
        hint="Use a UTF8 database: CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0.",
    )


def connect(
    dsn: str, *, autocommit: bool = False, application_name: str = "bookwatch"
) -> psycopg.Connection[TupleRow]:
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, **_params(dsn, application_name))
    except psycopg.OperationalError as exc:
        raise _unreachable(dsn, exc) from None
    problem = _encoding_problem(conn.info)
    if problem:
        conn.close()
        raise problem
    return conn


async def connect_async(
    dsn: str, *, autocommit: bool = False, application_name: str = "bookwatch"
) -> psycopg.AsyncConnection[TupleRow]:
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=autocommit, **_params(dsn, application_name)
        )
    except psycopg.OperationalError as exc:
        raise _unreachable(dsn, exc) from None
    problem = _encoding_problem(conn.info)
    if problem:
        await conn.close()
        raise problem
    return conn
