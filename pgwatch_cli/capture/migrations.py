"""Numbered schema migrations (sql/migrations/NNN_*.sql): an older install upgrades in place."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.errors import BookwatchError


class SchemaTooNew(BookwatchError):
    """The installed bookwatch schema is newer than this bookwatch."""


def current_version() -> int:
    """The schema version this bookwatch creates: its highest migration."""
    return sqlfiles.migrations()[-1][0]


def installed_version(conn: psycopg.Connection[Any]) -> int | None:
    """The version in bookwatch.meta; None when schema bookwatch does not exist."""
    exists = conn.execute(sqlfiles.query("schema_exists")).fetchone()
    if not exists or not exists[0]:
        return None
    meta = conn.execute("SELECT to_regclass('bookwatch.meta') IS NOT NULL").fetchone()
    if not meta or not meta[0]:
        return 0
    row = conn.execute(sqlfiles.query("schema_version")).fetchone()
    return int(row[0]) if row else 0


def check_not_newer(installed: int | None) -> None:
    if installed is not None and installed > current_version():
        raise SchemaTooNew(
            f"The bookwatch schema in this database is version {installed}; this bookwatch "
            f"knows versions up to {current_version()}.",
            hint="Upgrade bookwatch (pip install -U bookwatch); nothing was changed.",
        )


def plan(conn: psycopg.Connection[Any]) -> tuple[list[sql.SQL | sql.Composed], list[str]]:
    """Statements that bring the schema to ``current_version()``, and a line per migration."""
    installed = installed_version(conn)
    check_not_newer(installed)
    start = installed or 0
    statements: list[sql.SQL | sql.Composed] = []
    actions: list[str] = []
    for number, name, text in sqlfiles.migrations():
        if number <= start:
            continue
        statements.append(sql.SQL(text.strip()))
        if installed is not None:
            actions.append(f"schema bookwatch: migration {name} applied (events kept)")
    if statements:
        statements.append(
            sql.SQL(
                "INSERT INTO bookwatch.meta (key, value) VALUES ('schema_version', {})"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ).format(sql.Literal(str(current_version())))
        )
    return statements, actions
