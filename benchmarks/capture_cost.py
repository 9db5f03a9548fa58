"""What each part of capture costs a writer: backend CPU per single-row UPDATE transaction.

Runs N autocommit UPDATEs of one row of a pgbench_accounts-shaped table (4 columns) through one
connection and reads that backend's CPU time from /proc before and after, so the client's own
work does not count and neither does the rest of a noisy machine. Variants run in interleaved
rounds in one scratch database; each is reported as the median over rounds and as the
difference to no trigger. It needs a local server (its /proc) with wal_level = logical, and
libpq settings (PGHOST, PGPORT, PGUSER) or --dsn for a role that may create databases.

    python benchmarks/capture_cost.py [--transactions 5000] [--rounds 3]

The parts, cheapest first: REPLICA IDENTITY FULL alone (the old row goes into the WAL); a
PL/pgSQL row trigger and a statement trigger that do nothing; a row trigger that only emits a
constant message with pg_logical_emit_message; wal mode v3 (FULL, the publication and the
statement trigger that emits the actor once per transaction); log and notify mode; the seed's
plain NOTIFY trigger. Decoding happens in the walsender, not in the writer: it is not counted
here (benchmarks/write_overhead.sh measures writers with the consumers running).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import psycopg

TABLE = "accounts"
ROWS = 100_000
MESSAGE = "x" * 250  # about the size of one event for this table

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


def statement_trigger(conn: psycopg.Connection, dsn: str) -> None:
    conn.execute(f"CREATE TRIGGER bench BEFORE UPDATE ON {TABLE} FOR EACH STATEMENT"
                 " EXECUTE FUNCTION bench_nothing()")


def replica_identity_full(conn: psycopg.Connection, dsn: str) -> None:
    conn.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY FULL")


def bookwatch_mode(mode: str) -> SetUp:
    def set_up(conn: psycopg.Connection, dsn: str) -> None:
        bookwatch(dsn, "install-triggers", "-t", TABLE, "--mode", mode)
    return set_up


VARIANTS: dict[str, SetUp] = {
    "no trigger": lambda conn, dsn: None,
    "REPLICA IDENTITY FULL": replica_identity_full,
    "empty row trigger": plain_trigger("bench_nothing"),
    "empty statement trigger": statement_trigger,
    "row trigger emitting": plain_trigger("bench_emit"),
    "wal v3 (FULL + actor)": bookwatch_mode("wal"),
    "log": bookwatch_mode("log"),
    "notify": bookwatch_mode("notify"),
    "seed NOTIFY trigger": plain_trigger("bench_seed"),
}


def reset(conn: psycopg.Connection, dsn: str) -> None:
    conn.execute(f"DROP TRIGGER IF EXISTS bench ON {TABLE}")
    bookwatch(dsn, "remove-triggers", "-t", TABLE)
    conn.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY DEFAULT")


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
