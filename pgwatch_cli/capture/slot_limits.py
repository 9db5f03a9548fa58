"""The cap PostgreSQL puts on what a replication slot may keep: ``max_slot_wal_keep_size``.

Unlimited (the default), a slot nobody reads keeps WAL until the disk is full."""

from __future__ import annotations

from typing import Any

import psycopg

from pgwatch_cli.capture import sqlfiles

# What install-triggers and status suggest when the cap is unlimited.
SUGGESTED_KEEP_SIZE = "4GB"


def wal_keep_size(conn: psycopg.Connection[Any]) -> int | None:
    """The cap in bytes; -1 when unlimited."""
    row = conn.execute(sqlfiles.query("slot_wal_keep_size")).fetchone()
    return None if row is None else int(row[0])


def keep_size_warning() -> str:
    return ("max_slot_wal_keep_size is unlimited (-1): while no relay runs, the slot keeps WAL "
            "until the disk is full; cap it (a slot past the cap is invalidated and its loss "
            "logged as a GAP): ALTER SYSTEM SET max_slot_wal_keep_size = "
            f"'{SUGGESTED_KEEP_SIZE}'; SELECT pg_reload_conf();")
