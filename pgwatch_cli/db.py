"""Opening connections: one place that turns a DSN choice into psycopg connections."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import TupleRow

from pgwatch_cli import config, embedded
from pgwatch_cli.config import DsnChoice
from pgwatch_cli.errors import DatabaseUnreachable

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
    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, **KEEPALIVES}
    if "application_name" not in psycopg.conninfo.conninfo_to_dict(dsn):
        params["application_name"] = application_name
    return params


def _unreachable(dsn: str, exc: psycopg.OperationalError) -> DatabaseUnreachable:
    # libpq's first line names the failure (refused, timeout, auth) without the password,
    # after a preamble naming the server, which we say our way.
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    reason = first.rsplit("failed: ", 1)[-1].strip()
    return DatabaseUnreachable(
        f"Cannot connect to PostgreSQL at {config.describe(dsn)}: {reason}",
        hint="Check --dsn / BOOKWATCH_DSN, or run without them to use the embedded server.",
    )


def connect(
    dsn: str, *, autocommit: bool = False, application_name: str = "bookwatch"
) -> psycopg.Connection[TupleRow]:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **_params(dsn, application_name))
    except psycopg.OperationalError as exc:
        raise _unreachable(dsn, exc) from None


async def connect_async(
    dsn: str, *, autocommit: bool = False, application_name: str = "bookwatch"
) -> psycopg.AsyncConnection[TupleRow]:
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=autocommit, **_params(dsn, application_name)
        )
    except psycopg.OperationalError as exc:
        raise _unreachable(dsn, exc) from None
