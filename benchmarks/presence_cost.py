"""What presence costs the event loop of one ``serve`` process, without HTTP around it.

A Presence with its PresenceSync (real PostgreSQL, scratch database) in this process; a
second process's PresenceSync churns too, so this one is woken and reads. Phases alternate:
*quiet* (nothing joins) and *churn* (``--viewers`` joins spread over ``--phase-s``, each
viewer staying 0.5 to 2 s, half of the people with two tabs, on 50 rows). A probe task asks to
wake every 5 ms and records how late it woke: that is the delay presence can add to anything
else on the loop (change events included). Also CPU time and database round trips.

    python benchmarks/presence_cost.py --dsn postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import time
from collections.abc import Iterator

import psycopg
from psycopg import conninfo

from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.commands.serve.presence_sync import PresenceSync

PROBE_S = 0.005


class Sink:
    """A watcher that takes every frame at once (a stream whose client reads)."""

    frames = 0
    size = 0

    def push(self, frame: bytes) -> None:
        Sink.frames += 1
        Sink.size += len(frame)


@contextlib.contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    name = f"bw_presence_cost_{multiprocessing.current_process().pid}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        scratch = conninfo.make_conninfo(dsn, dbname=name)
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA bookwatch")
        yield scratch
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def churn(presence: Presence, viewers: int, phase_s: float, prefix: str) -> None:
    started = time.monotonic()
    stays: list[asyncio.Task[None]] = []

    async def stay(entity: str, name: str) -> None:
        watcher = Sink()
        presence.join(entity, name, watcher)
        try:
            await asyncio.sleep(random.uniform(0.5, 2.0))
        finally:
            presence.leave(entity, name, watcher)

    for number in range(viewers):
        await asyncio.sleep(max(0.0, started + number * phase_s / viewers - time.monotonic()))
        name = f"{prefix} {number % (viewers // 2)} 李"
        stays.append(asyncio.create_task(stay(f"bookings:{random.randint(1, 50)}", name)))
    await asyncio.gather(*stays)


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(PROBE_S)
        lags.append(loop.time() - asked - PROBE_S)


def other_replica(dsn: str, viewers: int, phase_s: float, rounds: int) -> None:
    async def main() -> None:
        presence = Presence()
        sync = PresenceSync(presence, dsn)
        task = asyncio.create_task(sync.run())
        for _ in range(rounds):
            await churn(presence, viewers, phase_s, "Remote")
        sync.stop()
        await task
    asyncio.run(main())


async def measure(dsn: str, args: argparse.Namespace) -> None:
    presence = Presence()
    sync = PresenceSync(presence, dsn)
    task = asyncio.create_task(sync.run())
    while not sync.shared:
        await asyncio.sleep(0.05)
    results: dict[str, list[float]] = {"quiet": [], "churn": []}
    for repetition in range(args.repetitions):
        for kind in results:
            lags: list[float] = []
            stop = asyncio.Event()
            prober = asyncio.create_task(probe(lags, stop))
            cpu, trips = time.process_time(), sync.syncs + sync.reads
            if kind == "churn":
                await churn(presence, args.viewers, args.phase_s, "Local")
            else:
                await asyncio.sleep(args.phase_s + 1.25)
            stop.set()
            await prober
            cpu = time.process_time() - cpu
            trips = sync.syncs + sync.reads - trips
            results[kind] += lags
            print(f"rep {repetition + 1} {kind:5}  {summary(lags)}  CPU {cpu:5.2f} s"
                  f"  round trips {trips}", flush=True)
    for kind, lags in results.items():
        print(f"all   {kind:5}  {summary(lags)}")
    print(f"frames pushed {Sink.frames}, {Sink.size / 1e6:.1f} MB")
    sync.stop()
    await task


def summary(lags: list[float]) -> str:
    ordered = sorted(lags)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (f"loop lag n={len(ordered):5}  p50 {ordered[len(ordered) // 2] * 1000:5.2f} ms"
            f"  p99 {p99 * 1000:5.2f} ms  max {ordered[-1] * 1000:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--viewers", type=int, default=1000, help="joins per churn phase")
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument("--repetitions", type=int, default=2)
    args = parser.parse_args()
    with scratch_database(args.dsn) as dsn:
        # The other replica churns all along: this process is woken and reads in both phases.
        other = multiprocessing.Process(target=other_replica, args=(
            dsn, args.viewers // 4, args.phase_s, 2 * args.repetitions + 1))
        other.start()
        try:
            asyncio.run(measure(dsn, args))
        finally:
            other.terminate()
            other.join(10)


if __name__ == "__main__":
    main()
