#!/usr/bin/env python3
"""The wal relay under load, side by side with log-mode delivery, in one run.

(a) Ceiling: W writer processes commit one wal-mode event per transaction as fast as they can
    for --seconds, while ``bookwatch relay`` (its own process: its CPU counts) appends them to
    the change log. Reports events/s written and appended, and the lag at the end (events not
    yet appended, and how long the relay needs to catch up).
(b) Latency commit -> ChangeStream at each --rates value: wal mode (writer emits, relay appends
    and wakes, the listener reads the log) and log mode (the writer appends under the
    commit-order lock and sends the wake-up itself), interleaved in rounds in one run. Latency
    is receipt minus the event's timestamp, taken in the writer's transaction just before commit.

The capture triggers live on the capture branch: writers here emit the same messages and log
rows the capture function produces (tests/relay_helpers.py), without a trigger.

Usage: python benchmarks/relay_load.py [--dsn DSN] [--writers 8] [--seconds 30]
                                       [--rates 100,1000] [--rate-seconds 10] [--rounds 2]
Without --dsn a throwaway wal_level=logical cluster is started (--fsync on|off) and removed.
With --dsn, the database must be empty of bookwatch: a scratch schema is created, then dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pgwatch_cli.stream.events import ChangeEvent
from pgwatch_cli.stream.listener import ChangeStream
from tests.relay_helpers import EMIT_SQL, TAIL_SQL, install_wal

LOG_SQL = (
    "WITH l AS (SELECT bookwatch.commit_order_lock()),"
    " s AS (SELECT nextval('bookwatch.change_seq') AS seq FROM l)"
    " INSERT INTO bookwatch.change_log (seq, channel, payload)"
    " SELECT seq, %(channel)s, '{\"v\":1,\"seq\":' || seq || " + TAIL_SQL + " FROM s"
    " RETURNING seq"
)
DIFF = json.dumps({"gesamtpreis": [1352.0, 1400.0], "updated_at": ["2026-11-28T06:40:00+00:00",
                                                                   "2026-11-28T06:41:00+00:00"]})


def _writer(dsn: str, mode: str, channel: str, rate: float, seconds: float,
            counter: Any) -> None:
    """Commit one event per transaction; paced to ``rate``/s (0: flat out)."""
    params = {"id": 0, "diff": DIFF, "channel": channel}
    written = 0
    with psycopg.connect(dsn) as conn:
        start = time.monotonic()
        deadline = start + seconds
        while (now := time.monotonic()) < deadline:
            if rate and written >= (now - start) * rate:
                time.sleep(min(0.001, deadline - now))
                continue
            params["id"] = written
            if mode == "wal":
                conn.execute(EMIT_SQL, params)
            else:
                seq = conn.execute(LOG_SQL, params).fetchone()
                assert seq is not None
                conn.execute("SELECT pg_notify(%s, %s)", (channel, str(seq[0])))
            conn.commit()
            written += 1
    with counter.get_lock():
        counter.value += written


def _writers(dsn: str, mode: str, channel: str, count: int, rate: float,
             seconds: float) -> tuple[int, float]:
    counter = mp.Value("q", 0)
    procs = [mp.Process(target=_writer, args=(dsn, mode, channel, rate / count, seconds,
                                               counter)) for _ in range(count)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return int(counter.value), time.monotonic() - started


def _logged(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM bookwatch.change_log").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def _relay(dsn: str) -> Iterator[subprocess.Popen[bytes]]:
    relay = subprocess.Popen([sys.executable, "-m", "pgwatch_cli", "relay", "--dsn", dsn],
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with psycopg.connect(dsn) as conn:
                if conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone() == (1,):
                    break
            time.sleep(0.1)
        yield relay
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)


def ceiling(dsn: str, writers: int, seconds: float) -> dict[str, Any]:
    before = _logged(dsn)
    with _relay(dsn) as relay:
        # The relay's three processes: the walsender decoding the WAL, the relay, the backend
        # serving its appends.
        with psycopg.connect(dsn) as conn:
            walsender = conn.execute("SELECT pid FROM pg_stat_replication").fetchone()
            backend = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'bookwatch relay'"
                " AND backend_type = 'client backend'").fetchone()
        pids = {"relay": relay.pid, "walsender": walsender[0] if walsender else None,
                "relay_backend": backend[0] if backend else None}
        cpu_before = {name: _cpu(pid) for name, pid in pids.items() if pid}
        written, took = _writers(dsn, "wal", "ceiling", writers, 0, seconds)
        appended_at_end = _logged(dsn) - before
        ended = time.monotonic()
        while _logged(dsn) - before < written and time.monotonic() - ended < 120:
            time.sleep(0.05)
        caught_up_s = time.monotonic() - ended
        cpu = {name: _cpu(pids[name]) - start for name, start in cpu_before.items()}
    total_s = took + caught_up_s
    return {
        "writers": writers, "seconds": round(took, 1), "written": written,
        "written_per_s": round(written / took), "appended_per_s": round(appended_at_end / took),
        "lag_events_at_end": written - appended_at_end,
        "caught_up_after_s": round(caught_up_s, 2),
        "cpu_percent_of_one_core": {name: round(100 * used / total_s)
                                    for name, used in cpu.items()},
        "relay_chain_cpu_us_per_event": round(1e6 * sum(cpu.values()) / max(written, 1)),
    }


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _listen(dsn: str, channel: str, latencies: list[float], ready: asyncio.Event) -> None:
    async with ChangeStream(dsn, channel=channel, relay=False, check_interval=2.0) as stream:
        ready.set()
        async for event in stream:
            latencies.append(_latency_ms(event))


def _latency_ms(event: ChangeEvent) -> float:
    return (time.time() - datetime.fromisoformat(event.timestamp).timestamp()) * 1000


def latency_round(dsn: str, mode: str, rate: float, seconds: float) -> dict[str, Any]:
    channel = f"lat_{mode}_{int(rate)}"
    latencies: list[float] = []

    async def scenario() -> int:
        ready = asyncio.Event()
        listener = asyncio.create_task(_listen(dsn, channel, latencies, ready))
        await ready.wait()
        written, _ = await asyncio.to_thread(_writers, dsn, mode, channel, 2, rate, seconds)
        deadline = time.monotonic() + 15
        while len(latencies) < written and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        return written

    written = asyncio.run(scenario())
    latencies.sort()
    result: dict[str, Any] = {"mode": mode, "rate": rate, "written": written,
                              "received": len(latencies)}
    if latencies:
        result.update(
            p50_ms=round(statistics.median(latencies), 2),
            p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
            max_ms=round(latencies[-1], 2),
        )
    if mode == "wal":
        # How much of it is the relay's: commit -> the start of the relay's append.
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM logged_at - (payload::json->>'timestamp')::timestamptz)"
                " * 1000 FROM bookwatch.change_log WHERE channel = %s ORDER BY 1", (channel,)
            ).fetchall()
        relay_ms = [float(row[0]) for row in rows]
        if relay_ms:
            result.update(
                relay_p50_ms=round(statistics.median(relay_ms), 2),
                relay_p99_ms=round(relay_ms[min(len(relay_ms) - 1, int(len(relay_ms) * 0.99))], 2),
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rates", default="100,1000")
    parser.add_argument("--rate-seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fsync", choices=("on", "off"), default="on",
                        help="fsync of the throwaway cluster (off: measure CPU paths only)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            from tests.fix_logical import logical_cluster

            cluster = logical_cluster(fsync=args.fsync, full_page_writes=args.fsync)
            server = stack.enter_context(cluster)
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute("CREATE DATABASE relay_load")
            dsn = psycopg.conninfo.make_conninfo(server, dbname="relay_load")
        install_wal(dsn)
        stack.callback(_uninstall, dsn)
        report: dict[str, Any] = {"ceiling": ceiling(dsn, args.writers, args.seconds)}
        print(json.dumps(report["ceiling"]), file=sys.stderr)
        rounds = []
        with _relay(dsn):
            for _ in range(args.rounds):
                for rate in (float(r) for r in args.rates.split(",")):
                    for mode in ("wal", "log"):
                        rounds.append(latency_round(dsn, mode, rate, args.rate_seconds))
                        print(json.dumps(rounds[-1]), file=sys.stderr)
        report["latency"] = rounds
        print(json.dumps(report, indent=2))


def _uninstall(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                     " WHERE database = current_database() AND NOT active")
        conn.execute("DROP PUBLICATION IF EXISTS bookwatch_messages")
        conn.execute("DROP SCHEMA IF EXISTS bookwatch CASCADE")


if __name__ == "__main__":
    main()
