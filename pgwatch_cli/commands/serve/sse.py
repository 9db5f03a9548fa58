"""Server-Sent Events encoding (the ``text/event-stream`` format of the HTML standard)."""

from __future__ import annotations

import random
import re
from collections import OrderedDict

from pgwatch_cli.stream.events import ChangeEvent

MEDIA_TYPE = "text/event-stream"
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


def change_frame(event: ChangeEvent) -> bytes:
    return frame(event.to_wire(), event="change", event_id=event.seq)


class FrameCache:
    """The encoded frame of recent events, so a thousand clients cost one ``to_wire()``.

    Keyed by object identity: the hub hands the same event object to every subscriber. The
    cache keeps the event referenced, so an id is never reused while it is a key.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._frames: OrderedDict[int, tuple[ChangeEvent, bytes]] = OrderedDict()

    def __call__(self, event: ChangeEvent) -> bytes:
        hit = self._frames.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        encoded = change_frame(event)
        self._frames[id(event)] = (event, encoded)
        if len(self._frames) > self._size:
            self._frames.popitem(last=False)
        return encoded
