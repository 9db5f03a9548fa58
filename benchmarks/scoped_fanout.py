#!/usr/bin/env python3
"""The fan-out's own CPU with scoped tokens, in one process, without the database or HTTP:
``--clients`` real sockets (socketpairs, read by nobody, so every write is a real ``send``),
``--events`` change events of tenant 7 passed to the fan-out one by one, and the process CPU
time of the passes measured for each kind of crowd, interleaved over ``--rounds``:

- ``shared``: the shared token (no scope; what ``--token`` costs),
- ``same-tenant``: every client its own signed token for tenant 7 (every event to everyone),
- ``own-tenant``: every client its own tenant (each event reaches the one client of tenant 7),
- ``tables-only``: every client its own token without a tenant (checked client by client).

Complements ``scoped_tokens.py`` (the whole server under sse_load), whose figures a shared,
loaded machine makes noisy. Prints one JSON object: microseconds of CPU per event and per
delivery, and each mode's ratio to ``shared`` per round.

Usage: python benchmarks/scoped_fanout.py --clients 5000 --events 200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import time
from typing import Any

from pgwatch_cli.auth import Scope
from pgwatch_cli.commands.serve import scopes
from pgwatch_cli.commands.serve.fanout import Client, Fanout
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.stream.events import ChangeEvent, parse
from pgwatch_cli.stream.filters import Filters

MODES = ("shared", "same-tenant", "own-tenant", "tables-only")


def event(seq: int) -> ChangeEvent:
    return parse(json.dumps({
        "v": 1, "seq": seq, "table": "sse_load", "schema": "public", "action": "UPDATE",
        "id": 1, "pk": {"id": 1}, "actor": "writer", "changed": ["n"],
        "diff": {"n": [seq - 1, seq]}, "truncated": False, "tenant": 7, "txid": 1000 + seq,
        "timestamp": "2026-12-03T04:00:00.123456+00:00"}, separators=(",", ":")))


def filters_for(mode: str, number: int) -> Filters:
    table = Filters.of(tables=["sse_load"])  # as sse_load's clients ask
    if mode == "shared":
        return table
    tenant = {"same-tenant": "7", "own-tenant": str(1000 + number)}.get(mode)
    scope = Scope(sub=f"client{number}", tables=frozenset({"sse_load"}), ids=None,
                  tenant=tenant, expires_at=time.time() + 3600)
    return scopes.scoped_filters(table, scope)


async def measure(mode: str, clients: int, events: int, first_seq: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fanout = Fanout(RelayCounters(), max_lag_s=0, buffer_bytes=64 << 20)
    ends = []
    for number in range(clients):
        ours, theirs = socket.socketpair()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        fanout.add(Client(fanout, transport, filters_for(mode, number),  # type: ignore[arg-type]
                          catching_up=False, done=loop.create_future(), chunked=True))
        ends.append((transport, theirs))
    batch = [event(first_seq + index) for index in range(events)]
    await asyncio.sleep(0.1)
    before = time.process_time()
    for item in batch:  # one pass per event, as at 10 events/s
        fanout.deliver(item)
        fanout.flush()
    spent = time.process_time() - before
    delivered = fanout.counters.events_relayed
    for transport, theirs in ends:
        transport.abort()
        theirs.close()
    await asyncio.sleep(0.1)
    return {"cpu_us_per_event": round(spent / events * 1e6, 1),
            "cpu_us_per_delivery": round(spent / delivered * 1e6, 3) if delivered else None,
            "deliveries": delivered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
    seq = 1
    for number in range(args.rounds):
        order = MODES if number % 2 == 0 else tuple(reversed(MODES))
        measured = {}
        for mode in order:
            measured[mode] = asyncio.run(measure(mode, args.clients, args.events, seq))
            seq += args.events
        for mode in MODES[1:]:
            ratios[mode].append(round(measured[mode]["cpu_us_per_event"]
                                      / measured["shared"]["cpu_us_per_event"], 3))
        runs += [{"round": number, "mode": mode, **result} for mode, result in measured.items()]
    print(json.dumps({"clients": args.clients, "events": args.events, "runs": runs,
                      "cpu_ratio_to_shared": ratios,
                      "median_ratio": {mode: statistics.median(values)
                                       for mode, values in ratios.items()}}, indent=1))


if __name__ == "__main__":
    main()
