"""Helpers for the presence tests: a bare replica that can crash, and polling with a deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.commands.serve.presence_sync import PresenceSync

T = TypeVar("T")


def eventually(probe: Callable[[], T], accept: Callable[[T], bool], timeout: float) -> T:
    """Call ``probe`` until ``accept`` says yes; the last value, or AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(0.05)


class Frames:
    """A watcher that records the presence frames it is given."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)


class Replica:
    """Another ``serve``'s presence (a Presence and its PresenceSync) on its own loop in a
    thread. ``crash()`` stops it the way a killed process stops: no cleanup, no more
    heartbeats, its rows left to expire."""

    def __init__(self, dsn: str, **sync_options: Any) -> None:
        self._dsn = dsn
        self._options = sync_options
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.presence: Presence | None = None
        self.sync: PresenceSync | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self.presence = Presence()
        self.sync = PresenceSync(self.presence, self._dsn, **self._options)
        self._task = asyncio.create_task(self.sync.run())

    def call(self, action: Callable[[Presence], T]) -> T:
        """Run ``action(presence)`` on the replica's loop (Presence is not thread-safe)."""
        async def run() -> T:
            assert self.presence is not None
            return action(self.presence)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @property
    def shared(self) -> bool:
        return self.sync is not None and self.sync.shared

    def crash(self) -> None:
        async def cancel() -> None:
            assert self._task is not None
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(cancel(), self._loop).result(10)

    def stop(self) -> None:
        """A clean stop: its viewers are withdrawn at once."""
        async def stop() -> None:
            assert self.sync is not None and self._task is not None
            self.sync.stop()
            await asyncio.wait_for(self._task, 10)
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(15)

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self.crash()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
