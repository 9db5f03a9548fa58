"""What the benchmark's processes share: a message queue, a start barrier, a stop flag and
counters in shared memory (read by the progress bar without asking anyone)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.sharedctypes
import multiprocessing.synchronize
from dataclasses import dataclass
from typing import Any

import psycopg

from pgwatch_cli.errors import BookwatchError, database_failure

# Messages on ``Links.messages`` are tuples whose first item is one of these.
READY = "ready"  # (READY, who)
WRITES = "writes"  # (WRITES, WritePhase)
LISTENED = "listened"  # (LISTENED, ListenResult)
FAILED = "failed"  # (FAILED, "who: what went wrong")


@dataclass(frozen=True)
class Links:
    messages: multiprocessing.Queue[tuple[Any, ...]]
    # Writers and the coordinator meet here before each write phase, so all writers start
    # at the same moment and nobody writes while listeners are still connecting.
    start: multiprocessing.synchronize.Barrier
    stop: multiprocessing.synchronize.Event
    written: multiprocessing.sharedctypes.SynchronizedArray[int]  # per writer, this phase
    # Per listener process: events its slowest listener has received.
    received: multiprocessing.sharedctypes.SynchronizedArray[int]
    # Events the listeners should expect; -1 while the writers are still writing.
    target: multiprocessing.sharedctypes.Synchronized[int]

    @classmethod
    def create(
        cls, ctx: multiprocessing.context.SpawnContext, *, writers: int, listener_processes: int
    ) -> Links:
        return cls(
            messages=ctx.Queue(),
            start=ctx.Barrier(writers + 1),
            stop=ctx.Event(),
            written=ctx.Array("q", writers),
            received=ctx.Array("q", listener_processes),
            target=ctx.Value("q", -1),
        )


def failure_text(exc: BaseException) -> str:
    """One line about an exception in a child process, never with a connection password."""
    if isinstance(exc, BookwatchError):
        return exc.message
    if isinstance(exc, psycopg.Error):
        return database_failure(exc).message
    return f"{type(exc).__name__}: {exc}"
