"""A writer process: the same UPDATE load, first on the table without trigger, then on the one
with bookwatch's trigger.

Each event is one UPDATE in autocommit mode, so the statement is its own transaction and the
COMMIT travels in the same message: ``ts`` is the writer's clock (``time.time_ns()``, shared
by all processes on the machine) taken just before that message is sent. The listener's
receipt time minus ``ts`` is the commit→receive latency; it includes the UPDATE itself
(tens of microseconds), so it errs on the high side.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pgwatch_cli import db, lifecycle
from pgwatch_cli.commands.bench.links import FAILED, READY, WRITES, Links, failure_text
from pgwatch_cli.commands.bench.scratch import ROWS_PER_WRITER, Scratch

APPLICATION_NAME = "bookwatch bench writer"
_BARRIER_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class WriterJob:
    dsn: str
    scratch: Scratch
    index: int
    writers: int
    quota: int | None  # events to write; None: until ``duration`` is over
    duration: float | None
    rate: float  # this writer's events/s; 0: as fast as possible
    pad: int
    parent_pid: int  # the coordinator: this process exits when it is gone


@dataclass
class WritePhase:
    """One writer's account of one phase."""

    writer: int
    with_trigger: bool
    written: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    statement_us: list[int] = field(default_factory=list)  # duration of each committing UPDATE


def main(job: WriterJob, links: Links) -> None:
    """Process entry point."""
    lifecycle.child_process_setup(job.parent_pid)  # the coordinator alone handles Ctrl-C
    try:
        with db.connect(job.dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
            links.messages.put((READY, f"writer {job.index}"))
            for with_trigger in (False, True):
                links.start.wait(_BARRIER_TIMEOUT_S)
                links.messages.put((WRITES, _write(conn, job, links, with_trigger)))
    except threading.BrokenBarrierError:
        return  # the coordinator gave up; it knows why
    except Exception as exc:
        links.messages.put((FAILED, f"writer {job.index}: {failure_text(exc)}"))
        links.start.abort()


def _write(
    conn: psycopg.Connection[tuple[object, ...]], job: WriterJob, links: Links, with_trigger: bool
) -> WritePhase:
    statement = sql.SQL("UPDATE {} SET k = %s, ts = %s, pad = %s WHERE id = %s").format(
        job.scratch.table(with_trigger).identifier()
    )
    phase = WritePhase(job.index, with_trigger)
    interval_ns = int(1e9 / job.rate) if job.rate else 0
    deadline = time.monotonic_ns() + int(job.duration * 1e9) if job.duration else None
    first_row = job.index * ROWS_PER_WRITER
    links.written[job.index] = 0
    count = 0
    phase.started_ns = time.time_ns()
    next_at = time.monotonic_ns()
    with conn.cursor() as cursor:
        while not links.stop.is_set():
            if job.quota is not None and count >= job.quota:
                break
            if deadline is not None and time.monotonic_ns() >= deadline:
                break
            if interval_ns:
                now = time.monotonic_ns()
                if next_at > now:
                    time.sleep((next_at - now) / 1e9)
                # Fall behind rather than burst: a writer that cannot keep the rate writes
                # as fast as it can, it does not try to catch up.
                next_at = max(next_at + interval_ns, now)
            key = job.index + job.writers * count  # unique across the run, never negative
            pad = (format(key, "x") + "-" * job.pad)[: job.pad]  # differs from the row's old pad
            sent_ns = time.time_ns()
            began = time.perf_counter_ns()
            cursor.execute(
                statement, (key, sent_ns, pad, first_row + count % ROWS_PER_WRITER), prepare=True
            )
            phase.statement_us.append((time.perf_counter_ns() - began) // 1000)
            count += 1
            links.written[job.index] = count
    phase.finished_ns = time.time_ns()
    phase.written = count
    return phase
