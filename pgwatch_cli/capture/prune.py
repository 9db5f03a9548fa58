"""Deleting old events from the change log: ``bookwatch prune`` and the retention policy.

Pruning always removes a prefix of the log (every event below some seq), never a hole in the
middle, so a listener that finds its cursor before the log's first seq knows exactly what it
missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.errors import NotInstalled

# The first event to keep: the oldest one inside the window. A walk along the primary key
# from the start that stops there, so it costs about as much as there is to delete.
_FIRST_KEPT_BY_AGE = """
SELECT seq FROM bookwatch.change_log
 WHERE logged_at >= now() - %(interval)s::interval
 ORDER BY seq LIMIT 1
"""
_FIRST_KEPT_BY_COUNT = """
SELECT seq FROM bookwatch.change_log ORDER BY seq DESC OFFSET %(keep)s - 1 LIMIT 1
"""
_OLDEST_IS_INSIDE = """
SELECT NOT EXISTS (
    SELECT FROM (SELECT logged_at FROM bookwatch.change_log ORDER BY seq LIMIT 1) AS oldest
     WHERE logged_at < now() - %(interval)s::interval)
"""


@dataclass(frozen=True)
class Pruned:
    deleted: int
    first_kept: int | None  # the log's first seq afterwards (None: the log is empty)


def _installed(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT to_regclass('bookwatch.change_log') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise NotInstalled("There is no bookwatch change log in this database.",
                           suggest="install-triggers")


def prune(
    conn: psycopg.Connection[Any], *, older_than: str | None = None,
    keep_last: int | None = None, dry_run: bool = False,
) -> Pruned:
    """Delete events logged more than ``older_than`` (interval text) ago, or all but the
    newest ``keep_last``. One transaction; a dry run counts and changes nothing."""
    with conn.transaction(force_rollback=dry_run):
        _installed(conn)
        if older_than is not None:
            row = conn.execute(_FIRST_KEPT_BY_AGE, {"interval": older_than}).fetchone()
        else:
            row = conn.execute(_FIRST_KEPT_BY_COUNT, {"keep": keep_last}).fetchone()
            if row is None:  # fewer events than to keep
                return Pruned(0, _first_seq(conn))
        first_kept = int(row[0]) if row else None
        if first_kept is None:
            counted = conn.execute("SELECT count(*) FROM bookwatch.change_log").fetchone()
        else:
            counted = conn.execute(
                "SELECT count(*) FROM bookwatch.change_log WHERE seq < %s", (first_kept,)
            ).fetchone()
        deleted = int(counted[0]) if counted else 0
        if deleted and not dry_run:
            if first_kept is None:
                conn.execute("DELETE FROM bookwatch.change_log")
            else:
                conn.execute("DELETE FROM bookwatch.change_log WHERE seq < %s", (first_kept,))
    return Pruned(deleted, first_kept)


def _first_seq(conn: psycopg.Connection[Any]) -> int | None:
    row = conn.execute("SELECT min(seq) FROM bookwatch.change_log").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def retention(conn: psycopg.Connection[Any]) -> str | None:
    """The stored retention interval (None when not installed)."""
    row = conn.execute("SELECT to_regclass('bookwatch.meta') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute(sqlfiles.query("meta_value"), {"key": "retention"}).fetchone()
    return str(found[0]) if found else None


def apply_retention(conn: psycopg.Connection[Any]) -> int:
    """Apply the stored retention policy; the number of events deleted.

    For the relay and serve processes, which call it now and then: when nothing is old
    enough it costs one index probe and deletes nothing.
    """
    interval = retention(conn)
    if interval is None:
        return 0
    with conn.transaction():
        inside = conn.execute(_OLDEST_IS_INSIDE, {"interval": interval}).fetchone()
    if inside and inside[0]:
        return 0
    return prune(conn, older_than=interval).deleted
