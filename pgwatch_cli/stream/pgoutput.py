"""The frames of a logical replication stream that the relay needs, decoded from bytes.

Two layers (PostgreSQL docs, "Streaming Replication Protocol" and "Logical Replication Message
Formats", protocol version 1): the CopyData envelope (``w`` XLogData carrying one pgoutput
message, ``k`` primary keepalive), and inside XLogData the pgoutput messages ``B`` begin,
``M`` logical decoding message, ``C`` commit. Every other pgoutput message (relations, rows,
origins, types) is of no interest: the publication has no tables.
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


@dataclass(frozen=True)
class Keepalive:
    wal_end: int
    reply_requested: bool


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    committed_at: datetime
    xid: int


@dataclass(frozen=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    committed_at: datetime


@dataclass(frozen=True)
class Other:
    """A pgoutput message the relay does not use (its type byte kept for diagnostics)."""

    kind: str


Frame = Keepalive | Begin | Message | Commit | Other


def decode(data: bytes | memoryview) -> Frame:
    """One CopyData payload from the walsender, decoded."""
    buf = bytes(data)
    if not buf:
        raise ProtocolError("empty CopyData frame")
    try:
        if buf[0] == ord("k"):
            wal_end, _sent, reply = _KEEPALIVE.unpack_from(buf, 1)
            return Keepalive(wal_end, bool(reply))
        if buf[0] == ord("w"):
            return _decode_pgoutput(buf[1 + _XLOGDATA.size:])
    except struct.error as exc:
        raise ProtocolError(f"short {chr(buf[0])!r} frame: {exc}") from None
    raise ProtocolError(f"unexpected CopyData frame type {buf[:1]!r}")


def _decode_pgoutput(buf: bytes) -> Frame:
    if not buf:
        raise ProtocolError("empty XLogData")
    kind, body = buf[0], buf[1:]
    if kind == ord("B"):
        final_lsn, when, xid = _BEGIN.unpack_from(body)
        return Begin(final_lsn, _time(when), xid)
    if kind == ord("C"):
        _flags, commit_lsn, end_lsn, when = _COMMIT.unpack_from(body)
        return Commit(commit_lsn, end_lsn, _time(when))
    if kind == ord("M"):
        flags, lsn = _MESSAGE_HEAD.unpack_from(body)
        end = body.find(b"\0", _MESSAGE_HEAD.size)
        if end < 0:
            raise ProtocolError("message prefix without terminator")
        prefix = body[_MESSAGE_HEAD.size:end].decode("utf-8", "replace")
        (length,) = _LENGTH.unpack_from(body, end + 1)
        start = end + 1 + _LENGTH.size
        content = body[start:start + length]
        if len(content) != length:
            raise ProtocolError("message content shorter than its length")
        return Message(bool(flags & 1), lsn, prefix, content)
    return Other(chr(kind))


def _time(micros: int) -> datetime:
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
