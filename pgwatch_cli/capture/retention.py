"""Durations for --retention and prune --older-than: ``7d``, ``12h``, ``30m``, ``90s``, ``2w``."""

from __future__ import annotations

import re

from psycopg import sql

from pgwatch_cli.errors import UsageProblem

DEFAULT = "7d"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d{1,9})([smhdw])")


def to_interval(text: str, option: str = "--retention") -> str:
    """``7d`` → ``7 days``: PostgreSQL interval text, built only from validated parts."""
    matched = _DURATION.fullmatch(text.strip().lower())
    if not matched or int(matched.group(1)) == 0:
        raise UsageProblem(
            f"{option} wants a positive duration like 7d, 12h, 30m, 90s or 2w; got {text!r}."
        )
    return f"{int(matched.group(1))} {_UNITS[matched.group(2)]}"


def store_statement(interval: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO bookwatch.meta (key, value) VALUES ('retention', {})"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    ).format(sql.Literal(interval))
