"""wal mode (v3) on one table: what install-triggers sets up and remove-triggers undoes.

No row trigger: the table joins bookwatch's publication (a partitioned table through its root),
every relation of it gets ``REPLICA IDENTITY FULL`` (so an UPDATE's and a DELETE's old row is
whole in the WAL; the identity it had is stored and put back on removal), a statement-level
trigger emits the actor, and ``bookwatch.captured_table`` tells the relay the channel, key,
excluded columns and tenant column. Each install or removal ends with a ``bookwatch.config``
logical message, in order with the rows, so a running relay reads the configuration again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture.config import TriggerConfig
from pgwatch_cli.capture.tables import TableRef

ACTOR_TRIGGER_NAME = "bookwatch_actor"  # on each partition (statement triggers are not cloned)
ACTOR_FUNCTION = "emit_actor"
CONFIG_MESSAGE_PREFIX = "bookwatch.config"
Statement = sql.SQL | sql.Composed
_IDENTITY_NAMES = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


@dataclass(frozen=True)
class Member:
    """A relation of a captured table: the table itself or one of its partitions."""

    oid: int
    name: TableRef
    identity: str  # pg_class.relreplident
    index_name: str | None  # the identity index when identity is 'i'
    is_root: bool


def members(conn: psycopg.Connection[Any], oid: int) -> list[Member]:
    rows = conn.execute(
        """
        SELECT c.oid::int, n.nspname::text, c.relname::text, c.relreplident::text,
               (SELECT i.relname::text FROM pg_catalog.pg_index x
                  JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                 WHERE x.indrelid = c.oid AND x.indisreplident),
               c.oid = %(oid)s
          FROM (SELECT relid, level FROM pg_catalog.pg_partition_tree(%(oid)s::regclass)
                UNION SELECT %(oid)s::regclass, 0) AS t
          JOIN pg_catalog.pg_class c ON c.oid = t.relid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         ORDER BY t.level, c.oid
        """,
        {"oid": oid},
    ).fetchall()
    return [Member(int(r[0]), TableRef(r[1], r[2]), r[3], r[4], bool(r[5])) for r in rows]


def in_place(conn: psycopg.Connection[Any], oid: int, publication: str) -> bool:
    """Whether the table's capture is whole: FULL everywhere, in the publication, registered."""
    if not registered(conn, oid):
        return False
    if any(member.identity != "f" for member in members(conn, oid)):
        return False
    return _published(conn, oid, publication)


def install_statements(
    conn: psycopg.Connection[Any], table: TableRef, oid: int, config: TriggerConfig,
    publication: str,
) -> tuple[list[Statement], list[str]]:
    """Statements that put ``table`` in wal mode (after its old triggers were dropped), and a
    line per REPLICA IDENTITY change (said on stderr, shown by --dry-run)."""
    statements: list[Statement] = []
    notes: list[str] = []
    tenant = config.tenant_column
    for member in members(conn, oid):
        if not member.is_root:
            statements.append(sql.SQL(
                "DROP TRIGGER IF EXISTS {name} ON {table}"
            ).format(name=sql.Identifier(ACTOR_TRIGGER_NAME), table=member.name.identifier()))
            statements.append(_actor_trigger(ACTOR_TRIGGER_NAME, member.name, config))
        if member.identity != "f":
            statements.append(sql.SQL(
                "INSERT INTO bookwatch.replica_identity_before (relid, captured, identity,"
                " index_name) VALUES ({oid}::oid::regclass, {root}::oid::regclass, {identity},"
                " {index}) ON CONFLICT (relid) DO NOTHING"
            ).format(oid=sql.Literal(member.oid), root=sql.Literal(oid),
                     identity=sql.Literal(member.identity), index=sql.Literal(member.index_name)))
            statements.append(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
                member.name.identifier()))
            notes.append(f"{member.name}: REPLICA IDENTITY FULL (was "
                         f"{_IDENTITY_NAMES.get(member.identity, member.identity)}; "
                         "remove-triggers puts it back)")
    statements.append(sql.SQL(
        "INSERT INTO bookwatch.captured_table (relid, channel, key_columns, excluded_attnums,"
        " tenant_column) VALUES ({oid}::oid::regclass, {channel}, {keys}, {excluded}, {tenant})"
        " ON CONFLICT (relid) DO UPDATE SET channel = excluded.channel,"
        " key_columns = excluded.key_columns, excluded_attnums = excluded.excluded_attnums,"
        " tenant_column = excluded.tenant_column"
    ).format(oid=sql.Literal(oid), channel=sql.Literal(config.channel),
             keys=sql.Literal(list(config.primary_key)),
             excluded=sql.Literal([int(a) for a in config.excluded_attnums]),
             tenant=sql.Literal(tenant)))
    if not _published(conn, oid, publication):
        statements.append(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(publication), table.identifier()))
    statements.append(_actor_trigger("bookwatch_capture", table, config))
    statements.append(config_changed_statement())
    return statements, notes


def remove_statements(
    conn: psycopg.Connection[Any], table: TableRef, oid: int, publication: str
) -> tuple[list[Statement], list[str]]:
    """Undo ``install_statements`` but for the table's ``bookwatch_capture`` trigger (the
    caller drops it): publication, stored replica identities, partitions' actor triggers."""
    notes: list[str] = []
    before = _identities_before(conn, oid)
    # First, so the new-partition event trigger leaves the identities restored below alone.
    statements: list[Statement] = [sql.SQL(
        "DELETE FROM bookwatch.captured_table WHERE relid = {}::oid::regclass"
    ).format(sql.Literal(oid))]
    for member in members(conn, oid):
        if not member.is_root:
            statements.append(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(ACTOR_TRIGGER_NAME), member.name.identifier()))
        previous = before.get(member.oid)
        if previous is not None and member.identity == "f":
            statements.append(_restore_identity(member.name, *previous))
            notes.append(f"{member.name}: REPLICA IDENTITY "
                         f"{_IDENTITY_NAMES.get(previous[0], previous[0])} restored")
    statements.append(sql.SQL(
        "DELETE FROM bookwatch.replica_identity_before WHERE captured = {}::oid::regclass"
    ).format(sql.Literal(oid)))
    if _published(conn, oid, publication):
        statements.append(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
            sql.Identifier(publication), table.identifier()))
    statements.append(config_changed_statement())
    return statements, notes


def config_changed_statement() -> sql.Composed:
    return sql.SQL("SELECT pg_catalog.pg_logical_emit_message(true, {}, '')").format(
        sql.Literal(CONFIG_MESSAGE_PREFIX))


def forget_dropped_statement() -> sql.SQL:
    """Rows of tables dropped since (a scratch schema, a table dropped by hand)."""
    return sql.SQL(
        "DELETE FROM bookwatch.captured_table c"
        " WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = c.relid)"
    )


def registered_table_exists(conn: psycopg.Connection[Any]) -> bool:
    """Schema version 3 or later (before it, wal mode had no bookwatch.captured_table)."""
    row = conn.execute("SELECT to_regclass('bookwatch.captured_table') IS NOT NULL").fetchone()
    return bool(row and row[0])


def registered(conn: psycopg.Connection[Any], oid: int) -> bool:
    if not registered_table_exists(conn):
        return False
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM bookwatch.captured_table WHERE relid = %s::oid)", (oid,)
    ).fetchone()
    return bool(row and row[0])


def _actor_trigger(name: str, table: TableRef, config: TriggerConfig) -> sql.Composed:
    # The arguments are the table's configuration, as for the other modes' row triggers:
    # installed_triggers() reads them back; the function itself ignores them.
    args = sql.SQL(", ").join(sql.Literal(arg) for arg in config.arguments())
    return sql.SQL(
        "CREATE TRIGGER {name} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION bookwatch.{function}({args})"
    ).format(name=sql.Identifier(name), table=table.identifier(),
             function=sql.Identifier(ACTOR_FUNCTION), args=args)


def _published(conn: psycopg.Connection[Any], oid: int, publication: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication_rel r"
        " JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid"
        " WHERE p.pubname = %s AND r.prrelid = %s)",
        (publication, oid),
    ).fetchone()
    return bool(row and row[0])


def _identities_before(
    conn: psycopg.Connection[Any], oid: int
) -> dict[int, tuple[str, str | None]]:
    row = conn.execute(
        "SELECT to_regclass('bookwatch.replica_identity_before') IS NOT NULL"
    ).fetchone()
    if not row or not row[0]:
        return {}
    rows = conn.execute(
        "SELECT relid::oid::int, identity::text, index_name FROM bookwatch.replica_identity_before"
        " WHERE captured = %s::oid",
        (oid,),
    ).fetchall()
    return {int(r[0]): (str(r[1]), r[2]) for r in rows}


def _restore_identity(table: TableRef, identity: str, index_name: str | None) -> sql.Composed:
    if identity == "i" and index_name:
        return sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
            table.identifier(), sql.Identifier(index_name))
    word = {"n": "NOTHING", "f": "FULL"}.get(identity, "DEFAULT")
    return sql.SQL("ALTER TABLE {} REPLICA IDENTITY " + word).format(table.identifier())
