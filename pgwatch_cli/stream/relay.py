"""The wal-mode relay loop: frames from the database's logical slot, through the transaction
assembler (relay_assembler) and the event builder (relay_events), appended to the change log
in commit order when the batching policy (relay_batching) says so.

Exactly once across crashes: every event carries its transaction's commit LSN and its position
in it; the append records how far the log goes (``bookwatch.relay_progress``) in the same
transaction, checked again under the progress row's lock. A restarted relay skips what is
already there, and confirms a position to the slot only once everything before it is appended.
A transaction of any size is appended in chunks, so memory stays bounded.

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
from pgwatch_cli.stream.relay_assembler import Change, TransactionAssembler
from pgwatch_cli.stream.relay_batching import BatchPolicy, Pending
from pgwatch_cli.stream.relay_events import EventBuilder
from pgwatch_cli.stream.relay_store import Progress
from pgwatch_cli.stream.replication import ReplicationStream, SlotBusy, SlotMissing

STATUS_INTERVAL_S = 10.0  # standby status updates while idle (wal_sender_timeout is 60 s)
HOUSEKEEPING_EVERY_S = 60.0
LOST_REASON = ("the relay slot was invalidated: the server removed WAL it still needed "
               "(max_slot_wal_keep_size) while no relay ran")

# Work a relay does now and then on its own connection (the retention policy: capture's
# prune.apply_retention); it must not raise for "nothing to do".
Housekeeping = Callable[[psycopg.Connection[TupleRow]], object]


@dataclass
class RelayStats:
    """What one relay did, for its status line and tests."""

    slot: str = ""
    started_at: float = field(default_factory=monotonic)
    appended: int = 0  # events appended to the change log
    transactions: int = 0  # transactions with changes relayed
    batches: int = 0  # append transactions
    skipped: int = 0  # changes already in the log (a restart after a crash)
    ignored: int = 0  # changes of tables that are not captured
    gaps: int = 0  # GAP events appended (the slot was lost and made again)
    newest_seq: int | None = None
    lag_s: float | None = None  # commit -> appended, of the newest appended transaction


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
        self._policy = BatchPolicy()
        self._slot = ""
        self._done = Progress(0, None)
        self._builder: EventBuilder | None = None
        self._stream: ReplicationStream | None = None
        self._confirmed = 0
        self._status_sent_at = monotonic()

    def run(self) -> None:
        """Take the slot (SlotMissing / SlotBusy when it cannot) and relay until stopped."""
        store = self._store
        slot = relay_store.slot_name(store)
        state = relay_store.slot_state(store, slot)
        if not state.exists:
            raise SlotMissing(f"no replication slot {slot}")
        if state.active_pid is not None:
            raise SlotBusy(f"replication slot {slot} is active for PID {state.active_pid}")
        self.stats.slot = self._slot = slot
        if state.lost:
            relay_store.replace_lost_slot(store, slot, LOST_REASON)
            self.stats.gaps += 1
        encoding = relay_store.server_encoding(store)
        self._builder = EventBuilder(store, encoding)
        self._done = relay_store.progress(store, slot)
        try:
            stream = ReplicationStream.start(self.dsn, slot, relay_store.STREAM_OPTIONS)
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            # "can no longer get changes from replication slot": invalidated since the check.
            relay_store.replace_lost_slot(store, slot, f"{LOST_REASON} ({_first_line(exc)})")
            self.stats.gaps += 1
            stream = ReplicationStream.start(self.dsn, slot, relay_store.STREAM_OPTIONS)
        self._stream = stream
        try:
            self._relay(stream, TransactionAssembler(encoding))
        finally:
            stream.close()

    def _relay(self, stream: ReplicationStream, assembler: TransactionAssembler) -> None:
        builder = self._builder
        assert builder is not None
        policy = self._policy
        pending = Pending()
        reached = 0  # end LSN of the last transaction fully handled (appended or empty)
        reported_at = monotonic()
        while not self._stop.is_set():
            raw = stream.read(policy.read_timeout(pending))
            if raw is None and policy.linger(pending) > 0:
                # Sleep rather than wake for each frame: one read then takes many.
                time.sleep(policy.linger(pending))
                raw = stream.read(0)
            if raw is None or policy.full(pending):
                pending = self._flush(pending)
                if not pending.changes and reached > self._confirmed and \
                        not assembler.in_transaction:
                    self._confirm(reached)
                if monotonic() - reported_at >= self._status_every_s:
                    reported_at = monotonic()
                    self._report()
                if raw is None:
                    self._housekeep()
                    if monotonic() - self._status_sent_at >= STATUS_INTERVAL_S:
                        self._confirm(self._confirmed)
                    continue
            frame = pgoutput.decode(raw)
            if isinstance(frame, pgoutput.RowChange):
                change = assembler.change(frame)
                if self._done.covers(change.commit_lsn, change.position):
                    self.stats.skipped += 1
                else:
                    pending.add(change, frame.size())
            elif isinstance(frame, pgoutput.Begin):
                assembler.begin(frame)
            elif isinstance(frame, pgoutput.Commit):
                changes = assembler.commit(frame)
                if changes:
                    self.stats.transactions += 1
                pending.committed(frame.commit_lsn, frame.end_lsn)
                reached = max(reached, frame.end_lsn)
            elif isinstance(frame, pgoutput.Message):
                if assembler.message(frame):
                    pending = self._flush(pending)
                    builder.forget()
            elif isinstance(frame, pgoutput.Relation):
                # Rows read before it were written under the relation's previous shape.
                pending = self._flush(pending)
                builder.relation(frame)
            elif isinstance(frame, pgoutput.Truncate):
                change = assembler.change(frame)
                if not self._done.covers(change.commit_lsn, change.position):
                    pending.add(change, 0)
            elif isinstance(frame, pgoutput.Keepalive):
                if not assembler.in_transaction and not pending.changes:
                    # Everything before the server's WAL end has been sent and handled: an
                    # idle database beside busy ones still lets its WAL go.
                    reached = max(reached, frame.wal_end)
                    if reached > self._confirmed:
                        self._confirm(reached)
                if frame.reply_requested:
                    self._confirm(self._confirmed)
        pending = self._flush(pending)

    def _flush(self, pending: Pending) -> Pending:
        """Append what is pending (if anything); returns the next, empty batch."""
        if pending.changes:
            assert self._builder is not None and pending.reached is not None
            events = self._builder.build(pending.changes)
            self.stats.ignored = self._builder.ignored
            newest = relay_store.append(self._store, self._slot, events, pending.reached)
            self._done = pending.reached
            if newest is not None:
                self.stats.newest_seq = newest
            self.stats.appended += len(events)
            self.stats.batches += 1
            self._policy.appended(len(events))
            self._lag(pending.changes[-1])
        # Every transaction that ended by then is in the log: the slot may let it go.
        if pending.confirm_lsn > self._confirmed:
            self._confirm(pending.confirm_lsn)
        return Pending()

    def _confirm(self, lsn: int) -> None:
        assert self._stream is not None
        self._stream.send(pgoutput.standby_status(lsn))
        self._confirmed = max(self._confirmed, lsn)
        self._status_sent_at = monotonic()

    def _lag(self, change: Change) -> None:
        committed_at = pgoutput.protocol_time(change.commit_micros)
        self.stats.lag_s = (datetime.now(UTC) - committed_at).total_seconds()

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
