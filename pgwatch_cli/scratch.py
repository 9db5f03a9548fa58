"""Scratch schemas of ``simulate`` and ``bench``: who owns one, and which are abandoned.

A run claims its schema's name with a session-level advisory lock *before* creating it and
holds that lock on a connection it keeps open until the schema is dropped. A scratch schema
whose lock nobody holds therefore belongs to a run whose session is gone (killed, crashed,
its machine lost): provably abandoned. ``remove_abandoned`` drops those (each under the lock,
so two runs never race for one); ``find_orphans`` lists them for ``status``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

SIMULATE_PREFIX = "bookwatch_sim_"
BENCH_PREFIX = "bookwatch_bench_"
PREFIXES = {SIMULATE_PREFIX: "simulate", BENCH_PREFIX: "bench"}
# The two-key advisory lock space: hashtext(this) and hashtext(schema name).
_LOCK_SPACE = "bookwatch scratch"

_FIND_ORPHANS = """
SELECT n.nspname::text,
       (SELECT count(*) FROM pg_catalog.pg_trigger t
          JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = n.oid AND NOT t.tgisinternal)::int
  FROM pg_catalog.pg_namespace n
 WHERE (n.nspname LIKE 'bookwatch\\_sim\\_%%' OR n.nspname LIKE 'bookwatch\\_bench\\_%%')
   AND NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_catalog.pg_database
                             WHERE datname = current_database())
          AND l.classid = oid(hashtext(%(space)s)::bigint & 4294967295)
          AND l.objid = oid(hashtext(n.nspname)::bigint & 4294967295))
 ORDER BY 1
"""


def new_name(prefix: str) -> str:
    return prefix + secrets.token_hex(4)


@dataclass(frozen=True)
class Orphan:
    """A scratch schema left by a run that was killed before it could remove it."""

    schema: str
    triggers: int  # bookwatch capture triggers on its tables

    @property
    def command(self) -> str:
        return next(cmd for prefix, cmd in PREFIXES.items() if self.schema.startswith(prefix))

    @property
    def removal(self) -> str:
        """How to remove it by hand (the next ``simulate`` or ``bench`` also does)."""
        return f'DROP SCHEMA "{self.schema}" CASCADE'

    def describe(self) -> str:
        return (
            f"scratch schema {self.schema} ({self.triggers} trigger(s)) was left by a "
            f"'bookwatch {self.command}' that was killed"
        )


def find_orphans(conn: psycopg.Connection[Any]) -> list[Orphan]:
    """Scratch schemas in this database that no live run owns."""
    rows = conn.execute(_FIND_ORPHANS, {"space": _LOCK_SPACE}).fetchall()
    return [Orphan(str(name), int(count)) for name, count in rows]


def claim(conn: psycopg.Connection[Any], schema: str) -> None:
    """Mark ``schema`` as owned by this session until it ends (or ``release``)."""
    conn.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", (_LOCK_SPACE, schema))


def release(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", (_LOCK_SPACE, schema))


def _try_claim(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute(
        "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", (_LOCK_SPACE, schema)
    ).fetchone()
    return bool(row and row[0])


def drop(conn: psycopg.Connection[Any], schema: str, *, created_log: bool) -> None:
    """Drop a scratch schema (tables and triggers go with it) and its channel's log rows."""
    from pgwatch_cli.capture import triggers

    # The schema's name doubles as its NOTIFY channel, for simulate and bench alike.
    triggers.run(
        conn, lambda: triggers.plan_scratch_drop(conn, schema, schema, created_log=created_log)
    )


def remove_abandoned(conn: psycopg.Connection[Any]) -> list[Orphan]:
    """Drop every scratch schema no live run owns; return what was removed.

    ``conn`` must be in autocommit mode (the claim is a session lock)."""
    removed = []
    for orphan in find_orphans(conn):
        if not _try_claim(conn, orphan.schema):
            continue  # another run claimed it meanwhile (to remove it, too)
        try:
            drop(conn, orphan.schema, created_log=False)
        finally:
            release(conn, orphan.schema)
        removed.append(orphan)
    return removed
