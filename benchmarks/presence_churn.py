"""Does presence delay change events? Change-event latency with and without viewers churning.

One ``bookwatch serve`` (a subprocess) on a scratch database; ``--clients`` SSE streams read
change events while a writer commits ``--rate`` updates a second. Phases alternate, each
``--phase-s`` long: *quiet* (events only) and *churn* (``--viewers`` presence viewers open a
stream with ``viewer=NAME&viewing=bookings:N`` spread over the phase, each staying 0.5 to 2 s),
and *plain* (the same connections without presence, to tell presence's cost from the
connections').
Prints p50/p99/max of commit→client latency per phase and the p99 each adds to *quiet*.

    python benchmarks/presence_churn.py --dsn postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import psutil
import psycopg
from psycopg import conninfo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    name = f"bw_presence_churn_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield conninfo.make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def serve(dsn: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "serve", "--dsn", dsn, "--port", str(port)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def stream(port: int, query: str) -> AsyncIterator[asyncio.StreamReader]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    try:
        yield reader
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def event_client(port: int, received: list[tuple[int, float]],
                       ready: asyncio.Event) -> None:
    async with stream(port, "table=bookings") as reader:
        ready.set()
        while line := await reader.readline():
            if line.startswith(b"id: "):
                received.append((int(line[4:]), time.monotonic()))


PRESENCE_FRAMES = [0]


async def viewer(port: int, name: str | None, stay_s: float) -> None:
    query = f"table=guests&viewer={quote(name)}&viewing=bookings:{random.randint(1, 50)}" if (
        name is not None) else "table=guests"
    async with stream(port, query) as reader:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(stay_s):
                while data := await reader.read(65536):
                    PRESENCE_FRAMES[0] += data.count(b"event: presence")


async def writer(dsn: str, rate: float, committed: dict[int, float], stop: asyncio.Event) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            booking = random.randint(1, 200)
            before_commit = time.monotonic()
            async with conn.transaction():
                await conn.execute("UPDATE bookings SET gesamtpreis = gesamtpreis + 1"
                                   " WHERE id = %s", (booking,))
            cursor = await conn.execute("SELECT max(seq) FROM bookwatch.change_log")
            row = await cursor.fetchone()
            committed[row[0]] = before_commit  # type: ignore[index]
            await asyncio.sleep(1 / rate)


async def phase(port: int, dsn: str, args: argparse.Namespace, kind: str) -> list[float]:
    committed: dict[int, float] = {}
    received: list[tuple[int, float]] = []
    readies = [asyncio.Event() for _ in range(args.clients)]
    clients = [asyncio.create_task(event_client(port, received, ready))
               for ready in readies]
    await asyncio.gather(*(ready.wait() for ready in readies))
    await asyncio.sleep(0.5)
    stop = asyncio.Event()
    write = asyncio.create_task(writer(dsn, args.rate, committed, stop))
    viewers: list[asyncio.Task[None]] = []
    started = time.monotonic()
    if kind != "quiet":
        for number in range(args.viewers):
            # Spread the joins evenly over the phase.
            await asyncio.sleep(max(0.0, started + number * args.phase_s / args.viewers
                                    - time.monotonic()))
            # Half of the people have two tabs open.
            name = f"Gast {number % (args.viewers // 2)} 李" if kind == "churn" else None
            viewers.append(asyncio.create_task(viewer(port, name, random.uniform(0.5, 2.0))))
    await asyncio.sleep(max(0.0, started + args.phase_s - time.monotonic()))
    stop.set()
    await write
    await asyncio.sleep(0.5)
    for task in [*clients, *viewers]:
        task.cancel()
    await asyncio.gather(*clients, *viewers, return_exceptions=True)
    return [at - committed[seq] for seq, at in received if seq in committed]


def summary(samples: list[float]) -> str:
    if len(samples) < 20:
        raise SystemExit(f"only {len(samples)} samples: the benchmark measured nothing")
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (f"n={len(samples):6}  p50 {statistics.median(ordered) * 1000:6.1f} ms"
            f"  p99 {p99 * 1000:6.1f} ms  max {ordered[-1] * 1000:6.1f} ms")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(len(ordered) * 0.99) - 1]


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def main_async(args: argparse.Namespace, dsn: str, port: int, server: psutil.Process
                     ) -> None:
    results: dict[str, list[float]] = {"quiet": [], "plain": [], "churn": []}
    added: dict[str, list[float]] = {"plain": [], "churn": []}
    kinds = list(results)
    for repetition in range(args.repetitions):
        rep_p99: dict[str, float] = {}
        # A shared machine's load drifts: rotate the order so no phase always comes first.
        for kind in kinds[repetition % 3:] + kinds[:repetition % 3]:
            cpu, PRESENCE_FRAMES[0] = cpu_s(server), 0
            samples = await phase(port, dsn, args, kind)
            cpu = cpu_s(server) - cpu
            results[kind] += samples
            rep_p99[kind] = p99(samples)
            print(f"rep {repetition + 1} {kind:5}  {summary(samples)}  serve CPU {cpu:5.2f} s"
                  f"  presence frames {PRESENCE_FRAMES[0]}",
                  flush=True)
        for kind in added:
            added[kind].append(rep_p99[kind] - rep_p99["quiet"])
    for kind, samples in results.items():
        print(f"all   {kind:5}  {summary(samples)}")
    for kind, deltas in added.items():
        print(f"p99 added by {kind} (median of the repetitions' differences):"
              f" {statistics.median(deltas) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events a second")
    parser.add_argument("--viewers", type=int, default=1000, help="joins per churn phase")
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument("--repetitions", type=int, default=2)
    args = parser.parse_args()
    with scratch_database(args.dsn) as dsn:
        subprocess.run([sys.executable, "-m", "pgwatch_cli", "init-demo", "--dsn", dsn],
                       check=True, capture_output=True)
        port = free_port()
        with serve(dsn, port) as process:
            asyncio.run(main_async(args, dsn, port, psutil.Process(process.pid)))


if __name__ == "__main__":
    main()
