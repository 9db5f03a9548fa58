"""The wal-mode relay: committed capture messages from the database's logical slot, appended to
the change log in commit order.

Exactly-once across crashes: the commit LSN of the last appended transaction is stored with
the appended rows in one transaction (``bookwatch.relay_progress``); a restarted relay skips
transactions at or below it, and only then confirms the position to the slot. A relay killed
between the append and the confirmation sees those transactions again and skips them.

The slot admits one consumer, so a running relay is also the leader: others get SlotBusy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import monotonic

import psycopg
from psycopg.rows import TupleRow

from pgwatch_cli.stream import pgoutput, relay_store
from pgwatch_cli.stream.relay_store import CommittedBatch, Relayed
from pgwatch_cli.stream.replication import ReplicationStream, SlotBusy, SlotMissing

POLL_S = 0.5  # how long one read waits: bounds how fast a stop request is noticed
STATUS_INTERVAL_S = 10.0  # standby status updates while idle (wal_sender_timeout is 60 s)
MAX_BATCH_EVENTS = 5000
# A batch is appended when the stream has nothing more right now, when it is this big, or when
# its first transaction has waited this long: under a steady flood the socket is never empty.
MAX_BATCH_WAIT_S = 0.005
# Under a heavy stream, a batch waits this long for more transactions even when the socket is
# momentarily empty: every append is a round trip, a commit and a wake-up, which cost more CPU
# than the events in a small batch. Below BUSY_EVENTS_PER_S nothing waits (latency first).
LINGER_S = 0.002
BUSY_EVENTS_PER_S = 2000.0
MAX_BATCH_BYTES = 16 * 1024 * 1024
EVENT_HEAD = ',"table":'
HOUSEKEEPING_EVERY_S = 60.0

# Work a relay does now and then on its own connection (the retention policy: capture's
# prune.apply_retention); it must not raise for "nothing to do".
Housekeeping = Callable[[psycopg.Connection[TupleRow]], object]


@dataclass
class RelayStats:
    """What one relay did, for its status line and tests."""

    slot: str = ""
    started_at: float = field(default_factory=monotonic)
    appended: int = 0  # events appended to the change log
    transactions: int = 0  # transactions with events appended
    batches: int = 0  # append transactions
    skipped: int = 0  # transactions already in the log (a restart after a crash)
    ignored: int = 0  # messages that were not genuine capture events
    newest_seq: int | None = None
    lag_s: float | None = None  # commit -> appended, of the newest appended transaction


@dataclass(frozen=True)
class _Candidate:
    """A well-formed capture message; genuine when its secret is the installation's."""

    secret: bytes
    event: Relayed


@dataclass
class _Transaction:
    events: list[_Candidate] = field(default_factory=list)
    size: int = 0


class _Rate:
    """Events appended per second over the last second or so, to tell a heavy stream."""

    def __init__(self) -> None:
        self._window_start = monotonic()
        self._count = 0
        self._rate = 0.0

    def add(self, events: int) -> None:
        now = monotonic()
        self._count += events
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._rate, self._count, self._window_start = self._count / elapsed, 0, now

    def linger(self, pending_since: float) -> float:
        """How long the next read may wait before the pending batch is appended."""
        if self._rate < BUSY_EVENTS_PER_S:
            return 0.0
        return max(0.0, pending_since + LINGER_S - monotonic())


class Relay:
    """Relays until ``stop`` is set or the replication connection fails (ReplicationLost).

    ``store`` is an autocommit connection to the same database, owned by the caller.
    """

    def __init__(
        self,
        dsn: str,
        store: psycopg.Connection[TupleRow],
        *,
        stop: threading.Event,
        on_status: Callable[[RelayStats], None] | None = None,
        status_every_s: float = 1.0,
        housekeeping: Housekeeping | None = None,
    ) -> None:
        self.dsn = dsn
        self.stats = RelayStats()
        self._store = store
        self._stop = stop
        self._on_status = on_status
        self._status_every_s = status_every_s
        self._housekeeping = housekeeping
        self._housekept_at = monotonic()
        self._secrets: frozenset[bytes] = frozenset()
        self._rate = _Rate()

    def run(self) -> None:
        """Take the slot (SlotMissing / SlotBusy when it cannot) and relay until stopped."""
        store = self._store
        slot = relay_store.slot_name(store)
        state = relay_store.slot_state(store, slot)
        if not state.exists:
            raise SlotMissing(f"no replication slot {slot}")
        if state.active_pid is not None:
            raise SlotBusy(f"replication slot {slot} is active for PID {state.active_pid}")
        self.stats.slot = slot
        self._load_secrets()
        done = relay_store.progress(store, slot)
        stream = ReplicationStream.start(self.dsn, slot, relay_store.STREAM_OPTIONS)
        try:
            self._relay(stream, slot, pgoutput.parse_lsn(done) if done else 0)
        finally:
            stream.close()

    def _relay(self, stream: ReplicationStream, slot: str, done_lsn: int) -> None:
        pending: list[_Candidate] = []
        pending_bytes = 0
        pending_commit = 0  # commit LSN of the last pending transaction
        pending_since = 0.0
        reached = 0  # end LSN of the last transaction fully handled (appended or empty)
        confirmed = 0
        current: _Transaction | None = None
        committed_micros: int | None = None  # commit time of the last pending transaction
        status_sent_at = monotonic()
        reported_at = monotonic()
        while not self._stop.is_set():
            if pending:
                raw = stream.read(0)
                linger = self._rate.linger(pending_since) if raw is None else 0.0
                if linger > 0:
                    # Sleep rather than wake for each frame: one read then takes many.
                    time.sleep(linger)
                    raw = stream.read(0)
            else:
                raw = stream.read(POLL_S)
            if (
                raw is None
                or len(pending) >= MAX_BATCH_EVENTS
                or pending_bytes >= MAX_BATCH_BYTES
                or (pending and monotonic() - pending_since >= MAX_BATCH_WAIT_S)
            ):
                if pending:
                    self._append(slot, pending, pending_commit, committed_micros)
                    pending, pending_bytes = [], 0
                if reached > confirmed:
                    stream.send(pgoutput.standby_status(reached))
                    confirmed, status_sent_at = reached, monotonic()
                if monotonic() - reported_at >= self._status_every_s:
                    reported_at = monotonic()
                    self._report()
                if raw is None:
                    self._housekeep()
                    if monotonic() - status_sent_at >= STATUS_INTERVAL_S:
                        stream.send(pgoutput.standby_status(confirmed))
                        status_sent_at = monotonic()
                    continue
            frame = pgoutput.decode(raw)
            kind = type(frame)  # most frequent first: this runs three times per event
            if kind is pgoutput.Message:
                assert isinstance(frame, pgoutput.Message)
                event = self._well_formed(frame) if current is not None else None
                if event is None:
                    if frame.prefix == relay_store.MESSAGE_PREFIX:
                        self.stats.ignored += 1
                    continue
                assert current is not None
                current.events.append(event)
                current.size += len(event.event.tail)
            elif kind is pgoutput.Begin:
                current = _Transaction()
            elif kind is pgoutput.Commit:
                assert isinstance(frame, pgoutput.Commit)
                if current is not None and current.events:
                    if frame.commit_lsn <= done_lsn:
                        self.stats.skipped += 1
                    else:
                        if not pending:
                            pending_since = monotonic()
                        pending.extend(current.events)
                        pending_bytes += current.size
                        pending_commit = frame.commit_lsn
                        committed_micros = frame.commit_micros
                        self.stats.transactions += 1
                reached = max(reached, frame.end_lsn)
                current = None
            elif kind is pgoutput.Keepalive:
                assert isinstance(frame, pgoutput.Keepalive)
                if current is None and not pending:
                    # Everything before the server's WAL end has been sent and handled.
                    reached = max(reached, frame.wal_end)
                if frame.reply_requested:
                    stream.send(pgoutput.standby_status(confirmed))
                    status_sent_at = monotonic()
        if pending:
            self._append(slot, pending, pending_commit, committed_micros)
            stream.send(pgoutput.standby_status(reached))

    def _append(
        self, slot: str, pending: list[_Candidate], commit_lsn: int, committed_micros: int | None
    ) -> None:
        if any(candidate.secret not in self._secrets for candidate in pending):
            # One look per batch, however many forged messages it holds: a reinstall may have
            # set a new secret since this relay started.
            self._load_secrets()
        events = [c.event for c in pending if c.secret in self._secrets]
        self.stats.ignored += len(pending) - len(events)
        batch = CommittedBatch(events, pgoutput.format_lsn(commit_lsn))
        newest = relay_store.append(self._store, slot, batch)
        if newest is not None:
            self.stats.newest_seq = newest
        self.stats.appended += len(events)
        self.stats.batches += 1
        self._rate.add(len(events))
        if committed_micros is not None:
            committed_at = pgoutput.protocol_time(committed_micros)
            self.stats.lag_s = (datetime.now(UTC) - committed_at).total_seconds()

    def _well_formed(self, message: pgoutput.Message) -> _Candidate | None:
        """The event a capture message carries, or None when it is not one of ours: wrong
        prefix, not transactional, malformed. Its secret is checked at append time (anyone
        may call pg_logical_emit_message)."""
        if message.prefix != relay_store.MESSAGE_PREFIX or not message.transactional:
            return None
        secret, sep, rest = message.content.partition(b"\n")
        if not sep:
            return None
        channel, sep, tail = rest.partition(b"\n")
        if not sep or not channel:
            return None
        try:
            text = tail.decode("utf-8")
            name = channel.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not text.startswith(EVENT_HEAD) or not text.endswith("}") or "\n" in text:
            return None
        return _Candidate(secret, Relayed(name, text))

    def _load_secrets(self) -> None:
        current = relay_store.secrets(self._store)
        # Messages written under an earlier secret may still wait in the slot: keep those too.
        self._secrets = self._secrets | {s.encode() for s in current}

    def _housekeep(self) -> None:
        if self._housekeeping is None:
            return
        if monotonic() - self._housekept_at < HOUSEKEEPING_EVERY_S:
            return
        self._housekept_at = monotonic()
        self._housekeeping(self._store)

    def _report(self) -> None:
        if self._on_status is not None:
            self._on_status(self.stats)
