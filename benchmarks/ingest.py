"""What ChangeStream costs over a bare psycopg listener, measured side by side in one run.

(a) Ingest ceiling: N notifications are queued for two listening connections at once; each
    reader then drains its share as fast as it can: raw ``notifies()`` + ``json.loads`` vs
    ChangeStream (parse, validate, dedupe) into a consumer that does nothing.
(b) Delivery delay at a steady rate: one writer sends timestamped events at R/s while a raw
    listener and a ChangeStream listener, each in its own process, note receipt minus send time.

Usage: python benchmarks/ingest.py [--dsn DSN] [--events 100000] [--rate 500] [--seconds 10]
Works on a scratch database it creates and drops; nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.stats import nearest_rank
from pgwatch_cli.stream.listener import ChangeStream

CHANNEL = "bench_ingest"
BATCH = 10_000
# A realistic UPDATE event (~330 bytes); seq, id and timestamp are filled in per event.
EVENT_SQL = """
SELECT pg_notify(%(channel)s, format(
  '{"v":1,"seq":%%s,"table":"bookings","schema":"public","action":"UPDATE","id":%%s,'
  '"pk":{"id":%%s},"actor":"Anna","changed":["gesamtpreis","updated_at"],'
  '"diff":{"gesamtpreis":[100.0,120.0],"updated_at":["2026-11-28T06:40:00+00:00",'
  '"2026-11-28T06:41:00+00:00"]},"truncated":false,"txid":90211,"timestamp":"%%s"}',
  g, g %% 1000, g %% 1000,
  to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')))
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


def payload(seq: int, sent_at: float) -> str:
    stamp = datetime.fromtimestamp(sent_at, UTC).isoformat()
    return json.dumps({
        "v": 1, "seq": seq, "table": "bookings", "schema": "public", "action": "UPDATE",
        "id": seq % 1000, "pk": {"id": seq % 1000}, "actor": "Anna",
        "changed": ["gesamtpreis"], "diff": {"gesamtpreis": [100, 120]}, "truncated": False,
        "txid": 90211, "timestamp": stamp,
    }, separators=(",", ":"))


# -- (a) ingest ceiling --------------------------------------------------------------------------


async def raw_listener(dsn: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
    return conn


Rates = tuple[float, float]  # events per wall-clock second, per CPU second of this process


async def drain_raw(conn: psycopg.AsyncConnection[Any], events: int) -> Rates:
    started, cpu_started = time.perf_counter(), time.process_time()
    count = 0
    async for note in conn.notifies():
        json.loads(note.payload)
        count += 1
        if count == events:
            break
    return rates(events, started, cpu_started)


async def drain_stream(stream: ChangeStream, events: int) -> Rates:
    started, cpu_started = time.perf_counter(), time.process_time()
    count = 0
    async for _event in stream:
        count += 1
        if count == events:
            break
    return rates(events, started, cpu_started)


def rates(events: int, started: float, cpu_started: float) -> Rates:
    # CPU time counts only this reader's own work: the server's sending and the other
    # processes on a shared machine do not enter it, so it is the steadier ceiling.
    return (events / (time.perf_counter() - started),
            events / max(time.process_time() - cpu_started, 1e-9))


def send_batch(dsn: str, first: int, events: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(first, first + events, BATCH):
            last = min(start + BATCH, first + events) - 1
            conn.execute(EVENT_SQL, {"channel": CHANNEL, "first": start, "last": last})


async def ingest_round(
    dsn: str, events: int, first_seq: int, stream_first: bool
) -> tuple[Rates, Rates]:
    raw = await raw_listener(dsn)
    try:
        async with ChangeStream(dsn, channel=CHANNEL, notice=lambda _m: None) as stream:
            await asyncio.to_thread(send_batch, dsn, first_seq, events)
            # Both connections have the same N notifications pending; drain one after the
            # other (alternating who goes first) so neither competes with the other.
            if stream_first:
                stream_rate = await drain_stream(stream, events)
                raw_rate = await drain_raw(raw, events)
            else:
                raw_rate = await drain_raw(raw, events)
                stream_rate = await drain_stream(stream, events)
    finally:
        await raw.close()
    return raw_rate, stream_rate


def client_cost_us(repeat: int = 50_000) -> tuple[float, float]:
    """CPU per event on the client alone: json.loads vs parse + validate + dedupe."""
    stream = ChangeStream("", notice=lambda _m: None)
    texts = [payload(seq, time.time()) for seq in range(1, repeat + 1)]
    started = time.perf_counter()
    for text in texts:
        json.loads(text)
    raw = time.perf_counter() - started
    started = time.perf_counter()
    for text in texts:
        stream._accept(text)
    parsed = time.perf_counter() - started
    return raw / repeat * 1e6, parsed / repeat * 1e6


# -- (b) delivery delay at a steady rate ---------------------------------------------------------


def _delay_ms(stamp: str) -> float:
    return (time.time() - datetime.fromisoformat(stamp).timestamp()) * 1000


async def _listen_raw(dsn: str, events: int, ready: Any, deadline: float) -> list[float]:
    conn = await raw_listener(dsn)
    delays: list[float] = []
    async with conn:
        ready.set()
        while len(delays) < events and time.time() < deadline:
            async for note in conn.notifies(timeout=1.0):
                delays.append(_delay_ms(json.loads(note.payload)["timestamp"]))
                if len(delays) == events:
                    break
    return delays


async def _listen_stream(dsn: str, events: int, ready: Any, deadline: float) -> list[float]:
    delays: list[float] = []
    async with ChangeStream(dsn, channel=CHANNEL, notice=lambda _m: None) as stream:
        ready.set()
        try:
            async with asyncio.timeout(max(deadline - time.time(), 0.1)):
                async for event in stream:
                    delays.append(_delay_ms(event.timestamp))
                    if len(delays) == events:
                        break
        except TimeoutError:
            pass
    return delays


def listener_process(kind: str, dsn: str, events: int, ready: Any, results: Any,
                     deadline: float) -> None:
    listen = _listen_raw if kind == "raw" else _listen_stream
    results.put((kind, asyncio.run(listen(dsn, events, ready, deadline))))


def steady_writer(dsn: str, rate: float, events: int, first_seq: int) -> float:
    """Send ``events`` events at ``rate``/s on an absolute schedule; returns the rate achieved."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for number in range(events):
            due = started + number / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            conn.execute(
                "SELECT pg_notify(%s, %s)", (CHANNEL, payload(first_seq + number, time.time()))
            )
        return events / (time.perf_counter() - started)


def delay_run(dsn: str, rate: float, seconds: float, first_seq: int) -> dict[str, Any]:
    events = int(rate * seconds)
    context = mp.get_context("spawn")
    results = context.Queue()
    deadline = time.time() + seconds + 60
    readies = []
    processes = []
    for kind in ("raw", "stream"):
        ready = context.Event()
        process = context.Process(
            target=listener_process, args=(kind, dsn, events, ready, results, deadline)
        )
        process.start()
        readies.append(ready)
        processes.append(process)
    for ready in readies:
        if not ready.wait(60):
            raise SystemExit("a listener process did not start")
    achieved = steady_writer(dsn, rate, events, first_seq)
    delays = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(30)
    summary: dict[str, Any] = {"rate_achieved": round(achieved, 1), "events": events}
    for kind, values in delays.items():
        summary[kind] = {
            "received": len(values),
            "p50_ms": round(percentile(values, 50), 3),
            "p90_ms": round(percentile(values, 90), 3),
            "p99_ms": round(percentile(values, 99), 3),
        }
    summary["added_p50_ms"] = round(summary["stream"]["p50_ms"] - summary["raw"]["p50_ms"], 3)
    return summary


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank, as every bookwatch report computes it (pgwatch_cli.stats)."""
    return nearest_rank(sorted(values), pct / 100) if values else float("nan")


# -- scratch database and main ------------------------------------------------------------------


def scratch_database(dsn: str) -> tuple[str, str]:
    name = f"bookwatch_bench_ingest_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, psycopg.conninfo.make_conninfo(dsn, dbname=name)


def drop_database(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get(
        "BOOKWATCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--events", type=int, default=100_000, help="per ingest round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    name, dsn = scratch_database(args.dsn)
    try:
        rounds = [
            asyncio.run(ingest_round(dsn, args.events, 1 + n * args.events, n % 2 == 1))
            for n in range(args.rounds)
        ]
        raw_us, stream_us = client_cost_us()
        delay = delay_run(dsn, args.rate, args.seconds, 1)
    finally:
        drop_database(args.dsn, name)

    wall = [stream[0] / raw[0] for raw, stream in rounds]
    cpu = [stream[1] / raw[1] for raw, stream in rounds]
    result = {
        "ingest": {
            "events_per_round": args.events,
            "raw_per_s": [round(raw[0]) for raw, _ in rounds],
            "stream_per_s": [round(stream[0]) for _, stream in rounds],
            "raw_per_cpu_s": [round(raw[1]) for raw, _ in rounds],
            "stream_per_cpu_s": [round(stream[1]) for _, stream in rounds],
            "ratio_wall_median": round(statistics.median(wall), 3),
            "ratio_cpu_median": round(statistics.median(cpu), 3),
            "target_ratio": 0.5,
            "client_cpu_us_per_event": {"json_loads": round(raw_us, 2),
                                        "changestream": round(stream_us, 2)},
        },
        "delay": {**delay, "rate": args.rate, "target_added_p50_ms": 0.3},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    ingest = result["ingest"]
    print(f"Ingest ceiling ({args.events} events/round, {args.rounds} rounds; "
          "events per wall second | per CPU second of the reader):")
    for number, (raw, stream) in enumerate(rounds, 1):
        print(f"  round {number}: raw {raw[0]:7.0f}/s | {raw[1]:7.0f}/cpu-s   "
              f"ChangeStream {stream[0]:7.0f}/s | {stream[1]:7.0f}/cpu-s   "
              f"ratio {stream[0] / raw[0]:.2f} | {stream[1] / raw[1]:.2f}")
    print(f"  median ratio: wall {ingest['ratio_wall_median']:.2f}, "
          f"CPU {ingest['ratio_cpu_median']:.2f}  (target >= 0.50)")
    print(f"  client CPU per event alone: json.loads {raw_us:.2f} us, "
          f"ChangeStream parse+validate+dedupe {stream_us:.2f} us")
    print(f"Delivery delay at {args.rate:.0f}/s for {args.seconds:.0f} s "
          f"(achieved {delay['rate_achieved']}/s):")
    for kind in ("raw", "stream"):
        row = delay[kind]
        print(f"  {kind:6}  received {row['received']:6}  p50 {row['p50_ms']:.3f} ms  "
              f"p90 {row['p90_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms")
    print(f"  added at p50: {delay['added_p50_ms']:+.3f} ms  (target <= +0.3 ms)")


if __name__ == "__main__":
    sys.exit(main())
