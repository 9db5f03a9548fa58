"""Which capture mode a server allows, and what ``--mode auto`` picks there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.capture.config import Mode
from pgwatch_cli.errors import BookwatchError

CHOICES = ("auto", "wal", "log", "notify")


class WalModeUnavailable(BookwatchError):
    """This server or role cannot capture in wal mode."""


@dataclass(frozen=True)
class WalCapability:
    wal_level: str
    max_replication_slots: int
    may_replicate: bool
    superuser: bool

    def missing(self) -> str | None:
        """Why wal mode is not possible here, or None when it is."""
        if self.wal_level != "logical":
            return f"wal_level is {self.wal_level}, not logical"
        if self.max_replication_slots < 1:
            return "max_replication_slots is 0"
        if not self.may_replicate:
            return "the role is neither superuser nor REPLICATION"
        return None


def capability(conn: psycopg.Connection[Any]) -> WalCapability:
    row = conn.execute(sqlfiles.query("wal_capability")).fetchone()
    if row is None:
        return WalCapability("unknown", 0, False, False)
    return WalCapability(str(row[0]), int(row[1]), bool(row[2]), bool(row[3]))


def resolve(conn: psycopg.Connection[Any], requested: str) -> tuple[Mode, str]:
    """The mode to install and a sentence saying why (for ``auto``)."""
    if requested != "auto":
        mode = Mode(requested)
        if mode is Mode.WAL:
            why_not = capability(conn).missing()
            if why_not:
                fix = _fix(why_not)
                raise WalModeUnavailable(
                    f"--mode wal is not possible here: {why_not}.",
                    hint=fix[0].upper() + fix[1:] + " (or use --mode log).",
                )
        return mode, f"{mode.value} (requested)"
    why_not = capability(conn).missing()
    if why_not is None:
        return Mode.WAL, "wal (wal_level = logical and the role may replicate)"
    return Mode.LOG, f"log ({why_not}; {_fix(why_not)})"


def _fix(why_not: str) -> str:
    if "wal_level" in why_not:
        return "to allow wal: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    if "max_replication_slots" in why_not:
        return ("to allow wal: ALTER SYSTEM SET max_replication_slots = 10; then restart "
                "PostgreSQL")
    return "to allow wal: install as a superuser or as a role WITH REPLICATION"
