"""Listener processes: a group of listeners sharing one event loop (each with its own
ChangeStream, or with ``--hub`` all subscribed to one ChangeStream through a Hub), and the raw
baseline: one plain psycopg connection doing what a hand-written consumer of that capture mode
would do. In notify mode it parses each NOTIFY payload with ``json.loads``; in log and wal
modes, where a notification is only a wake-up, it reads the change log after its cursor and
parses each row with ``json.loads``. (In wal mode the events reach the log through the relay,
which runs in the ChangeStream processes, as it would run somewhere for a hand-written one.)

Each records, per listener, which event keys it got (to count lost and duplicated events) and
the latency of each first receipt: its clock at receipt minus the ``ts`` the writer put in the
row, which the event carries as the new value in its diff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli import db, lifecycle
from pgwatch_cli.commands.bench.links import FAILED, LISTENED, READY, Links, failure_text
from pgwatch_cli.stream.events import ChangeEvent
from pgwatch_cli.stream.hub import Hub, SubscriberLagged
from pgwatch_cli.stream.listener import ChangeStream

RAW_APPLICATION_NAME = "bookwatch bench raw listener"
_POLL_S = 0.05
_MAX_NOTICES = 5


@dataclass(frozen=True)
class ListenJob:
    dsn: str
    channel: str
    slot: int  # index into Links.received
    streams: int  # listeners in this process; 0 for the raw baseline
    drain_timeout: float
    hub: bool = False  # listeners share one ChangeStream through a Hub, as ``serve`` does
    parent_pid: int = 0  # the coordinator: this process exits when it is gone
    relay: bool = True  # the ChangeStreams relay the WAL when nobody does (wal mode)
    from_log: bool = True  # the raw baseline reads the change log on wake-up (log, wal modes)

    @property
    def raw(self) -> bool:
        return self.streams == 0


@dataclass
class Tally:
    """What one listener received."""

    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    foreign: int = 0  # events without the benchmark's keys (not written by a bench writer)

    def record(self, diff: Any, now_ns: int, latencies_us: list[int]) -> None:
        try:
            key = int(diff["k"][1])
            sent_ns = int(diff["ts"][1])
        except (TypeError, KeyError, IndexError, ValueError):
            self.foreign += 1
            return
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        latencies_us.append((now_ns - sent_ns) // 1000)


@dataclass
class ListenResult:
    slot: int
    raw: bool
    received: list[int]  # distinct events, per listener
    duplicates: list[int]  # per listener
    foreign: int
    latencies_us: list[int]  # every first receipt of every listener of this process
    last_receipt_ns: int
    reconnects: int = 0
    invalid: int = 0
    cut: int = 0  # hub subscribers cut loose for falling behind
    notices: list[str] = field(default_factory=list)


def main(job: ListenJob, links: Links) -> None:
    """Process entry point."""
    lifecycle.child_process_setup(job.parent_pid)  # the coordinator alone handles Ctrl-C
    who = "raw listener" if job.raw else f"listener process {job.slot}"
    try:
        result = _listen_raw(job, links) if job.raw else asyncio.run(_listen_streams(job, links))
    except Exception as exc:
        links.messages.put((FAILED, f"{who}: {failure_text(exc)}"))
        return
    links.messages.put((LISTENED, result))


class _Finish:
    """Decides when a listener process is done: every listener has every event, or nothing
    new arrived for ``drain_timeout`` seconds after the writers finished, or stop."""

    def __init__(self, job: ListenJob, links: Links) -> None:
        self.job, self.links = job, links
        self.last_total = 0
        self.quiet_since = time.monotonic()

    def done(self, tallies: list[Tally]) -> bool:
        slowest = min(len(tally.seen) for tally in tallies)
        self.links.received[self.job.slot] = slowest
        total = sum(len(tally.seen) for tally in tallies)
        if total != self.last_total:
            self.last_total, self.quiet_since = total, time.monotonic()
        if self.links.stop.is_set():
            return True
        target = self.links.target.value
        if target < 0:
            self.quiet_since = time.monotonic()  # writers still busy: silence is not drained
            return False
        return slowest >= target or time.monotonic() - self.quiet_since > self.job.drain_timeout


async def _listen_streams(job: ListenJob, links: Links) -> ListenResult:
    notices: list[str] = []
    tallies = [Tally() for _ in range(job.streams)]
    latencies: list[int] = []
    last_receipt = [0]
    cut = [0]

    async def consume(source: AsyncIterable[ChangeEvent], tally: Tally) -> None:
        try:
            async for event in source:
                now = time.time_ns()
                tally.record(event.diff, now, latencies)
                last_receipt[0] = now
        except SubscriberLagged:
            cut[0] += 1  # its missing events show up as lost

    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(
                ChangeStream(
                    job.dsn, channel=job.channel, notice=_collect(notices), relay=job.relay
                )
            )
            for _ in range(1 if job.hub else job.streams)
        ]
        sources: list[AsyncIterable[ChangeEvent]] = list(streams)
        tasks = []
        if job.hub:
            hub = Hub(streams[0])
            sources = [hub.subscribe() for _ in range(job.streams)]
            tasks.append(asyncio.create_task(hub.run()))
        links.messages.put((READY, f"listener process {job.slot}"))
        tasks += [asyncio.create_task(consume(s, t)) for s, t in zip(sources, tallies, strict=True)]
        finish = _Finish(job, links)
        try:
            while not finish.done(tallies):
                await asyncio.sleep(_POLL_S)
                for task in tasks:
                    if task.done():
                        task.result()  # a stream that ended raised: let it fail the run
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return ListenResult(
        slot=job.slot,
        raw=False,
        received=[len(t.seen) for t in tallies],
        duplicates=[t.duplicates for t in tallies],
        foreign=sum(t.foreign for t in tallies),
        latencies_us=latencies,
        last_receipt_ns=last_receipt[0],
        reconnects=sum(s.stats.reconnects for s in streams),
        invalid=sum(s.stats.invalid for s in streams),
        cut=cut[0],
        notices=notices,
    )


def _collect(notices: list[str]) -> Callable[[str], None]:
    def notice(message: str) -> None:
        if len(notices) < _MAX_NOTICES:
            notices.append(message)

    return notice


def _listen_raw(job: ListenJob, links: Links) -> ListenResult:
    tally = Tally()
    latencies: list[int] = []
    last_receipt = 0

    def receive(payload: str | None) -> None:
        nonlocal last_receipt
        try:
            diff = json.loads(payload or "").get("diff")
        except (ValueError, AttributeError):
            tally.foreign += 1
            return
        # Taken after decoding, like a ChangeStream consumer's: both hold a parsed event.
        last_receipt = time.time_ns()
        tally.record(diff, last_receipt, latencies)

    with db.connect(job.dsn, autocommit=True, application_name=RAW_APPLICATION_NAME) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(job.channel)))
        # After LISTEN: an event committed from here on is either counted in this cursor's
        # start or announced by a wake-up, never neither (and writers have not started yet).
        cursor = _newest_seq(conn) if job.from_log else 0
        links.messages.put((READY, "raw listener"))
        finish = _Finish(job, links)
        while not finish.done([tally]):
            if not job.from_log:
                for notify in conn.notifies(timeout=_POLL_S):
                    receive(notify.payload)
                continue
            # The first packet of wake-ups ends the wait (more may share it): read right away.
            if list(conn.notifies(timeout=_POLL_S, stop_after=1)):
                for seq, payload in conn.execute(_LOG_AFTER, (job.channel, cursor)):
                    cursor = seq
                    receive(payload)
    return ListenResult(
        slot=job.slot,
        raw=True,
        received=[len(tally.seen)],
        duplicates=[tally.duplicates],
        foreign=tally.foreign,
        latencies_us=latencies,
        last_receipt_ns=last_receipt,
    )


# A hand-written consumer's query (as docs/reference.md describes the log): its channel's rows
# after its cursor.
_LOG_AFTER = (
    "SELECT seq, payload FROM bookwatch.change_log WHERE channel = %s AND seq > %s ORDER BY seq"
)


def _newest_seq(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM bookwatch.change_log").fetchone()
    return int(row[0]) if row is not None else 0
