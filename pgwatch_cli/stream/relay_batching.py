"""When the relay appends: the batching policy between reading frames and appending events.

Every append is a round trip, a commit and a wake-up for every listener, which cost more CPU
than the events of a small batch; waiting costs latency. A batch is appended when the stream
has nothing more right now, when it is big (events or bytes), or when its first change has
waited MAX_WAIT_S; under a heavy stream a batch lingers LINGER_S for more even when the socket
is momentarily empty. Big transactions are cut at the same bounds (chunks with progress), so
memory stays bounded whatever a transaction's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import monotonic

from pgwatch_cli.stream.relay_assembler import Change
from pgwatch_cli.stream.relay_store import Progress

POLL_S = 0.5  # how long one read waits when idle: bounds how fast a stop request is noticed
MAX_EVENTS = 5000
MAX_BYTES = 16 * 1024 * 1024
MAX_WAIT_S = 0.005
LINGER_S = 0.002
BUSY_EVENTS_PER_S = 2000.0


@dataclass
class Pending:
    """Changes read but not yet appended, and what appending them achieves."""

    changes: list[Change] = field(default_factory=list)
    size: int = 0
    since: float = 0.0
    reached: Progress | None = None  # the progress to record once appended
    confirm_lsn: int = 0  # end LSN of the last whole transaction in it (0: none)

    def add(self, change: Change, size: int) -> None:
        if not self.changes:
            self.since = monotonic()
        self.changes.append(change)
        self.size += size
        self.reached = Progress(change.commit_lsn, change.position + 1)

    def committed(self, commit_lsn: int, end_lsn: int) -> None:
        if self.reached is not None and self.reached.commit_lsn == commit_lsn:
            self.reached = Progress(commit_lsn, None)
        self.confirm_lsn = end_lsn

    @property
    def worth_appending(self) -> bool:
        return bool(self.changes)


class BatchPolicy:
    """Tracks the event rate (events appended per second over the last second or so)."""

    def __init__(self) -> None:
        self._window_start = monotonic()
        self._count = 0
        self._rate = 0.0

    def appended(self, events: int) -> None:
        now = monotonic()
        self._count += events
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._rate, self._count, self._window_start = self._count / elapsed, 0, now

    def read_timeout(self, pending: Pending) -> float:
        return 0.0 if pending.changes else POLL_S

    def linger(self, pending: Pending) -> float:
        """How long to wait for more before appending a batch the socket has nothing to add."""
        if not pending.changes or self._rate < BUSY_EVENTS_PER_S:
            return 0.0
        return max(0.0, pending.since + LINGER_S - monotonic())

    def full(self, pending: Pending) -> bool:
        return (len(pending.changes) >= MAX_EVENTS or pending.size >= MAX_BYTES
                or (bool(pending.changes) and monotonic() - pending.since >= MAX_WAIT_S))
