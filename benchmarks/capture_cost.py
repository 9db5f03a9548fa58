"""What each part of capture costs a writer: backend CPU per single-row UPDATE transaction.

Runs N autocommit UPDATEs of one row of a pgbench_accounts-shaped table (4 columns) through one
connection and reads that backend's CPU time from /proc before and after, so the client's own
work does not count and neither does the rest of a noisy machine. Variants run in interleaved
rounds in one scratch database; each is reported as the median over rounds and as the
difference to no trigger. It needs a local server (its /proc) with wal_level = logical, and
libpq settings (PGHOST, PGPORT, PGUSER) or --dsn for a role that may create databases.

    python benchmarks/capture_cost.py [--transactions 5000] [--rounds 3]

The parts, cheapest first: a PL/pgSQL trigger that does nothing; one that only emits a
constant message of an event's size with pg_logical_emit_message; a SECURITY DEFINER one that
reads the secret and emits (the floor of wal mode's emitting step); wal mode's capture trigger
alone (builds the event, hands it over, emits nothing); all of wal mode, with the function
compiled for the table and with the generic one; log and notify mode; the seed's plain NOTIFY
trigger.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import psycopg
from psycopg import sql

TABLE = "accounts"
ROWS = 100_000
MESSAGE = "x" * 250  # about the size of one wal-mode event for this table

SETUP = f"""
CREATE TABLE {TABLE} (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
INSERT INTO {TABLE} SELECT i, i / 10000, 0, '' FROM generate_series(1, {ROWS}) AS i;
CREATE FUNCTION bench_nothing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;
CREATE FUNCTION bench_emit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_logical_emit_message(true, 'bench', '{MESSAGE}'); RETURN NULL; END $$;
CREATE FUNCTION bench_seed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench', json_build_object('table', TG_TABLE_NAME, 'action', TG_OP,
        'id', NEW.aid, 'timestamp', CURRENT_TIMESTAMP)::text);
    RETURN NULL;
END $$;
"""
# Created after install-triggers made bookwatch.wal_secret.
DEFINER_EMIT = f"""
CREATE FUNCTION bench_definer_emit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'bench',
        (SELECT s.secret FROM bookwatch.wal_secret s) || '{MESSAGE}');
    RETURN NULL;
END $$;
"""


SetUp = Callable[[psycopg.Connection, str], None]  # makes one variant's triggers


def backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def bookwatch(dsn: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pgwatch_cli", *args, "--dsn", dsn],
        check=True, capture_output=True, text=True,
    )


def plain_trigger(function: str) -> SetUp:
    def set_up(conn: psycopg.Connection, dsn: str) -> None:
        conn.execute(f"CREATE TRIGGER bench AFTER UPDATE ON {TABLE} FOR EACH ROW"
                     f" EXECUTE FUNCTION {function}()")
    return set_up


def bookwatch_mode(mode: str, *, drop_send: bool = False) -> SetUp:
    def set_up(conn: psycopg.Connection, dsn: str) -> None:
        bookwatch(dsn, "install-triggers", "-t", TABLE, "--mode", mode)
        if drop_send:
            conn.execute(f"DROP TRIGGER bookwatch_capture_send ON {TABLE}")
    return set_up


def generic_wal(conn: psycopg.Connection, dsn: str) -> None:
    """wal mode with the generic capture function in place of the table's compiled one."""
    bookwatch(dsn, "install-triggers", "-t", TABLE, "--mode", "wal")
    row = conn.execute(
        "SELECT tgnargs, tgargs FROM pg_trigger WHERE tgname = 'bookwatch_capture'"
        f" AND tgrelid = '{TABLE}'::regclass"
    ).fetchone()
    assert row is not None
    args = bytes(row[1]).split(b"\0")[: row[0]]
    conn.execute(f"DROP TRIGGER bookwatch_capture ON {TABLE}")
    conn.execute(
        sql.SQL("CREATE TRIGGER bookwatch_capture AFTER INSERT OR UPDATE OR DELETE ON {}"
                " FOR EACH ROW EXECUTE FUNCTION bookwatch.capture({})").format(
            sql.Identifier(TABLE), sql.SQL(", ").join(sql.Literal(a.decode()) for a in args)
        )
    )


VARIANTS: dict[str, SetUp] = {
    "no trigger": lambda conn, dsn: None,
    "empty PL/pgSQL trigger": plain_trigger("bench_nothing"),
    "emit a constant": plain_trigger("bench_emit"),
    "definer: secret + emit": plain_trigger("bench_definer_emit"),
    "wal: capture only": bookwatch_mode("wal", drop_send=True),
    "wal (capture + emit)": bookwatch_mode("wal"),
    "wal, generic function": generic_wal,
    "log": bookwatch_mode("log"),
    "notify": bookwatch_mode("notify"),
    "seed NOTIFY trigger": plain_trigger("bench_seed"),
}


def reset(conn: psycopg.Connection, dsn: str) -> None:
    conn.execute(f"DROP TRIGGER IF EXISTS bench ON {TABLE}")
    bookwatch(dsn, "remove-triggers", "-t", TABLE)


def measure(dsn: str, transactions: int) -> float:
    """Backend CPU per transaction, in microseconds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        for aid in range(1, 201):  # warm the session's caches and plans
            conn.execute(f"UPDATE {TABLE} SET abalance = abalance + 1 WHERE aid = %s", (aid,))
        before = backend_cpu_s(pid)
        for n in range(transactions):
            conn.execute(
                f"UPDATE {TABLE} SET abalance = abalance + 1 WHERE aid = %s", (n % ROWS + 1,)
            )
        return (backend_cpu_s(pid) - before) / transactions * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="", help="server to use (default: libpq settings)")
    parser.add_argument("--transactions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    db = "bookwatch_capture_cost"
    with psycopg.connect(args.dsn, dbname="postgres", autocommit=True) as admin:
        if admin.execute("SHOW wal_level").fetchone() != ("logical",):
            sys.exit("capture_cost.py needs wal_level = logical")
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {db}")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=db)
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SETUP)
            bookwatch(dsn, "install-triggers", "-t", TABLE, "--mode", "wal")
            conn.execute(DEFINER_EMIT)
            for round_ in range(args.rounds):
                for name, set_up in VARIANTS.items():
                    reset(conn, dsn)
                    set_up(conn, dsn)
                    samples[name].append(measure(dsn, args.transactions))
                    # The slot is not consumed here: drop what the round wrote to it.
                    conn.execute(
                        "SELECT count(*) FROM pg_replication_slots s, LATERAL"
                        " pg_logical_slot_get_binary_changes(s.slot_name, NULL, NULL,"
                        " 'proto_version', '1', 'publication_names', 'bookwatch_messages')"
                        " WHERE s.database = current_database()"
                    )
                print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
            reset(conn, dsn)
            bookwatch(dsn, "remove-triggers", "--drop-log")
    finally:
        with psycopg.connect(args.dsn, dbname="postgres", autocommit=True) as admin:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots s"
                " JOIN pg_database d ON d.oid = s.datoid WHERE d.datname = %s", (db,)
            )
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    base = statistics.median(samples["no trigger"])
    print(f"backend CPU per single-row UPDATE transaction, median of {args.rounds} rounds "
          f"x {args.transactions} transactions")
    for name, values in samples.items():
        value = statistics.median(values)
        print(f"  {name:26s} {value:7.1f} us   {value - base:+7.1f} us   "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
