"""Server-Sent Events encoding (the ``text/event-stream`` format of the HTML standard)."""

from __future__ import annotations

import random
import re
from collections import OrderedDict

from pgwatch_cli.stream.events import ChangeEvent

HEARTBEAT = b": heartbeat\n\n"
# EventSource waits this long before reconnecting; the jitter spreads a crowd of browsers
# that lost the server at the same moment over a few seconds instead of one thundering instant.
RETRY_BASE_MS = 2000
RETRY_JITTER_MS = 3000
# Only these end a line in the format (str.splitlines would also split on U+2028 and friends).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def frame(data: str, *, event: str | None = None, event_id: int | str | None = None) -> bytes:
    """One event: optional ``id:`` and ``event:`` lines, the data (one ``data:`` line per line)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def retry_hint() -> bytes:
    return f"retry: {RETRY_BASE_MS + random.randrange(RETRY_JITTER_MS)}\n\n".encode()


def comment(text: str) -> bytes:
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"


def log_tag(log_id: str | None) -> str | None:
    """The change log's identity as it appears in event ids: 12 hex digits of its uuid."""
    if not log_id:
        return None
    return log_id.replace("-", "").lower()[:12] or None


def event_id(seq: int | None, tag: str | None) -> str | None:
    """``TAG:SEQ``: a client resumes from a position in one log, not from a bare number that
    a replaced log would reuse (a bare ``SEQ`` when the log has no identity)."""
    if seq is None:
        return None
    return f"{tag}:{seq}" if tag else str(seq)


def change_frame(event: ChangeEvent, tag: str | None = None) -> bytes:
    return frame(event.to_wire(), event="change", event_id=event_id(event.seq, tag))


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk: streams are written straight to their transport, and the
    response says ``Transfer-Encoding: chunked`` (as every endless HTTP/1.1 body must)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class FrameCache:
    """Encoded frames of recent events by seq, for resuming clients (a crowd reconnecting after
    a restart replays the same range). Bounded by bytes, not by count: near-8 KB events would
    otherwise hold tens of MB whatever the number of clients."""

    def __init__(self, max_bytes: int = 4 << 20, tag: str | None = None) -> None:
        self.tag = tag  # the log the cached frames' ids name
        self._max_bytes = max_bytes
        self._bytes = 0
        self._frames: OrderedDict[int, bytes] = OrderedDict()

    def __call__(self, event: ChangeEvent) -> bytes:
        seq = event.seq
        if seq is None:
            return change_frame(event, self.tag)
        hit = self._frames.get(seq)
        if hit is not None:
            return hit
        encoded = change_frame(event, self.tag)
        self.keep(seq, encoded)
        return encoded

    def keep(self, seq: int, encoded: bytes) -> None:
        if len(encoded) > self._max_bytes or seq in self._frames:
            return
        self._frames[seq] = encoded
        self._bytes += len(encoded)
        while self._bytes > self._max_bytes:
            _, dropped = self._frames.popitem(last=False)
            self._bytes -= len(dropped)

    def replace(self, seq: int, encoded: bytes) -> None:
        """Keep ``encoded`` for ``seq`` instead of what was kept (an oversized event's reset)."""
        dropped = self._frames.pop(seq, None)
        if dropped is not None:
            self._bytes -= len(dropped)
        self.keep(seq, encoded)

    @property
    def size_bytes(self) -> int:
        return self._bytes
