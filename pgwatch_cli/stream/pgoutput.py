"""The frames of a logical replication stream that the relay needs, decoded from bytes.

Two layers (PostgreSQL docs, "Streaming Replication Protocol" and "Logical Replication Message
Formats", protocol version 1): the CopyData envelope (``w`` XLogData carrying one pgoutput
message, ``k`` primary keepalive), and inside XLogData the pgoutput messages ``B`` begin,
``M`` logical decoding message, ``C`` commit, ``R`` relation, ``I``/``U``/``D`` rows and ``T``
truncate. Column values stay bytes in the server's encoding (protocol 1 sends their text form);
origins and types are of no interest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Microseconds since 2000-01-01 UTC: how the protocol stamps times.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_XLOGDATA = struct.Struct("!QQq")  # start LSN, end LSN, send time
_KEEPALIVE = struct.Struct("!QqB")  # server WAL end, send time, reply requested
_BEGIN = struct.Struct("!QqI")  # final LSN of the transaction, commit time, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit LSN, end LSN, commit time
_MESSAGE_HEAD = struct.Struct("!BQ")  # flags (1 = transactional), LSN
_LENGTH = struct.Struct("!I")
_STATUS = struct.Struct("!cQQQqB")


class ProtocolError(ValueError):
    """A frame that does not follow the replication protocol."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    reply_requested: bool


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_micros: int  # protocol time (see PG_EPOCH); committed_at converts
    xid: int

    @property
    def committed_at(self) -> datetime:
        return protocol_time(self.commit_micros)


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_micros: int

    @property
    def committed_at(self) -> datetime:
        return protocol_time(self.commit_micros)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    columns: tuple[Column, ...]


class _Unchanged:
    """An unchanged TOASTed value the server did not send (``u``): take it from the old row."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
# One column of a row: its text form in the server's encoding, None for NULL, or UNCHANGED.
Value = bytes | None | _Unchanged
Values = tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class RowChange:
    """An INSERT (``old`` None), UPDATE or DELETE (``new`` None) of one row. With REPLICA
    IDENTITY FULL the old row is whole; without it an UPDATE may carry no old row at all."""

    action: str
    relid: int
    new: Values | None
    old: Values | None

    def size(self) -> int:
        """Bytes of column values carried, to bound events."""
        return sum(len(v) for v in (self.new or ()) + (self.old or ()) if isinstance(v, bytes))


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Other:
    """A pgoutput message the relay does not use (its type byte kept for diagnostics)."""

    kind: str


Frame = Keepalive | Begin | Message | Commit | Relation | RowChange | Truncate | Other

# The relay decodes three frames per event at tens of thousands of events per second: frames
# are read in place by offset (no slicing copies) and times are converted only when asked.
_KIND_AT = 1 + _XLOGDATA.size  # the pgoutput message type inside an XLogData frame
_BODY_AT = _KIND_AT + 1
_K, _W, _B, _C, _M = (ord(c) for c in "kwBCM")
_ROW_ACTIONS = {ord("I"): "INSERT", ord("U"): "UPDATE", ord("D"): "DELETE"}
_R, _T = ord("R"), ord("T")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!I")
_COLUMN = struct.Struct("!Ii")  # type oid, typmod
_N, _O, _KEY = ord("N"), ord("O"), ord("K")
_NULL, _TOAST, _TEXT, _BINARY = (ord(c) for c in "nutb")


def decode(data: bytes | memoryview) -> Frame:
    """One CopyData payload from the walsender, decoded."""
    buf = data if isinstance(data, bytes) else bytes(data)
    if not buf:
        raise ProtocolError("empty CopyData frame")
    first = buf[0]
    try:
        if first == _K:
            wal_end, _sent, reply = _KEEPALIVE.unpack_from(buf, 1)
            return Keepalive(wal_end, bool(reply))
        if first == _W:
            if len(buf) <= _KIND_AT:
                raise ProtocolError("empty XLogData")
            return _decode_pgoutput(buf)
    except struct.error as exc:
        raise ProtocolError(f"short {chr(first)!r} frame: {exc}") from None
    raise ProtocolError(f"unexpected CopyData frame type {buf[:1]!r}")


def _decode_pgoutput(buf: bytes) -> Frame:
    kind = buf[_KIND_AT]
    if kind == _M:
        flags, lsn = _MESSAGE_HEAD.unpack_from(buf, _BODY_AT)
        at = _BODY_AT + _MESSAGE_HEAD.size
        end = buf.find(b"\0", at)
        if end < 0:
            raise ProtocolError("message prefix without terminator")
        prefix = buf[at:end].decode("utf-8", "replace")
        (length,) = _LENGTH.unpack_from(buf, end + 1)
        start = end + 1 + _LENGTH.size
        content = buf[start:start + length]
        if len(content) != length:
            raise ProtocolError("message content shorter than its length")
        return Message(bool(flags & 1), lsn, prefix, content)
    if kind == _B:
        final_lsn, when, xid = _BEGIN.unpack_from(buf, _BODY_AT)
        return Begin(final_lsn, when, xid)
    if kind == _C:
        _flags, commit_lsn, end_lsn, when = _COMMIT.unpack_from(buf, _BODY_AT)
        return Commit(commit_lsn, end_lsn, when)
    action = _ROW_ACTIONS.get(kind)
    if action is not None:
        return _decode_row(buf, action)
    if kind == _R:
        return _decode_relation(buf)
    if kind == _T:
        (count,) = _INT32.unpack_from(buf, _BODY_AT)
        at = _BODY_AT + _INT32.size + 1  # options byte (CASCADE, RESTART IDENTITY)
        return Truncate(struct.unpack_from(f"!{count}I", buf, at))
    return Other(chr(kind))


def _string(buf: bytes, at: int) -> tuple[str, int]:
    """A NUL-terminated name (server encoding; names are decoded leniently) and the next
    offset. The relay reads names from the catalog by relid, not from here."""
    end = buf.find(b"\0", at)
    if end < 0:
        raise ProtocolError("string without terminator")
    return buf[at:end].decode("utf-8", "replace"), end + 1


def _decode_relation(buf: bytes) -> Relation:
    (relid,) = _INT32.unpack_from(buf, _BODY_AT)
    namespace, at = _string(buf, _BODY_AT + _INT32.size)
    name, at = _string(buf, at)
    at += 1  # replica identity setting
    (count,) = _INT16.unpack_from(buf, at)
    at += _INT16.size
    columns = []
    for _ in range(count):
        at += 1  # flags (part of the key)
        column, at = _string(buf, at)
        type_oid, typmod = _COLUMN.unpack_from(buf, at)
        at += _COLUMN.size
        columns.append(Column(column, type_oid, typmod))
    return Relation(relid, namespace, name, tuple(columns))


def _tuple(buf: bytes, at: int) -> tuple[Values, int]:
    (count,) = _INT16.unpack_from(buf, at)
    at += _INT16.size
    values: list[Value] = []
    for _ in range(count):
        kind = buf[at]
        at += 1
        if kind in (_TEXT, _BINARY):
            (length,) = _INT32.unpack_from(buf, at)
            at += _INT32.size
            value = buf[at:at + length]
            if len(value) != length:
                raise ProtocolError("column value shorter than its length")
            values.append(value)
            at += length
        elif kind == _NULL:
            values.append(None)
        elif kind == _TOAST:
            values.append(UNCHANGED)
        else:
            raise ProtocolError(f"unknown column kind {chr(kind)!r}")
    return tuple(values), at


def _decode_row(buf: bytes, action: str) -> RowChange:
    (relid,) = _INT32.unpack_from(buf, _BODY_AT)
    at = _BODY_AT + _INT32.size
    old: Values | None = None
    new: Values | None = None
    marker = buf[at]
    if marker in (_O, _KEY):
        # 'K' (REPLICA IDENTITY not FULL) holds the key only, other columns NULL.
        old, at = _tuple(buf, at + 1)
        if action != "DELETE":
            marker = buf[at]
    if action != "DELETE":
        if marker != _N:
            raise ProtocolError(f"{action} without a new row")
        new, at = _tuple(buf, at + 1)
    return RowChange(action, relid, new, old)


def protocol_time(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


def standby_status(flush_lsn: int, *, reply: bool = False) -> bytes:
    """A standby status update: everything up to ``flush_lsn`` is safely stored; the server may
    release the WAL before it and restart the slot there."""
    now = int((datetime.now(UTC) - PG_EPOCH) / timedelta(microseconds=1))
    return _STATUS.pack(b"r", flush_lsn, flush_lsn, flush_lsn, now, int(reply))


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
