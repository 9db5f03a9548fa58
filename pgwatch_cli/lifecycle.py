"""One shutdown path for Ctrl-C, SIGTERM and SIGHUP (docs/reference.md, "Signals").

SIGTERM and SIGHUP raise ``Terminated``, a ``KeyboardInterrupt``: every ``finally``, ``with``
and ``except KeyboardInterrupt`` that cleans up after Ctrl-C (scratch schemas, worker
processes, the embedded server's atexit release) therefore runs unchanged for them too. The CLI
maps ``Terminated`` to ``128 + signal`` and a plain ``KeyboardInterrupt`` to 130.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_WATCHDOG_PERIOD_S = 0.2


class Terminated(KeyboardInterrupt):
    """Stopped by a signal other than Ctrl-C; cleans up exactly as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return interrupt.exit_code if isinstance(interrupt, Terminated) else 128 + signal.SIGINT


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


SignalHandler = Callable[[int, FrameType | None], Any]


@contextmanager
def handling(signums: Iterable[int], handler: SignalHandler) -> Iterator[None]:
    """While inside, ``handler`` receives ``signums``; the previous handlers come back after.
    Outside the main thread (where Python refuses handlers) nothing changes."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        _restore(previous)


@contextmanager
def loop_handling(
    loop: asyncio.AbstractEventLoop, signums: Iterable[int], callback: Callable[[int], object]
) -> Iterator[None]:
    """``handling`` for an asyncio loop: ``callback(signum)`` runs in the loop. Afterwards the
    previous handlers come back, not the default action asyncio leaves behind, which would end
    the process in the middle of the cleanup that follows."""
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in previous:
        loop.add_signal_handler(signum, callback, signum)
    try:
        yield
    finally:
        for signum in previous:
            loop.remove_signal_handler(signum)
        _restore(previous)


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        # None: a handler not set from Python, which cannot be put back from here.
        if handler is not None:
            signal.signal(signum, handler)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in which SIGTERM and SIGHUP end ``main`` the way asyncio ends it on
    Ctrl-C: the main task is cancelled, its cleanup runs, then ``Terminated`` is raised.

    Raised from a Python signal handler instead, ``Terminated`` would land in whichever task
    happened to run, and asyncio would print that task's unretrieved exception as a traceback.
    """
    import asyncio  # here: the CLI imports this module, and --help should not pay for asyncio

    with asyncio.Runner() as runner:
        if not _in_main_thread():
            return runner.run(main)
        loop = runner.get_loop()
        caught: list[int] = []
        running: list[asyncio.Task[Any]] = []

        async def tracked() -> T:
            task = asyncio.current_task()
            if task is not None:
                running.append(task)
            return await main

        def stop(signum: int) -> None:
            caught.append(signum)
            for task in running:
                task.cancel()

        with loop_handling(loop, TERMINATING, stop):
            try:
                return runner.run(tracked())
            except asyncio.CancelledError:
                if caught:
                    raise Terminated(caught[0]) from None
                raise


@contextmanager
def signals_raise() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise ``Terminated`` in the main thread."""
    with handling(TERMINATING, _raise_terminated):
        yield


@contextmanager
def sigterm_exits_zero() -> Iterator[None]:
    """For long-running services (``serve``, ``relay``): SIGTERM is the normal way to stop
    them, so it ends the block quietly (exit 0); SIGHUP and Ctrl-C still propagate."""
    try:
        yield
    except Terminated as stop:
        if stop.signum != signal.SIGTERM:
            raise


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done, then act on the first one.

    For cleanup (a second Ctrl-C must not leave a scratch schema behind) and for steps that
    must not be cut in half (starting the embedded server registers it for release only at
    the end)."""
    pending: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    try:
        with handling((signal.SIGINT, *TERMINATING), remember):
            yield
    finally:
        # The signal wins over a failure of the block: that failure is most likely its
        # consequence (``timeout`` signals the whole process group, initdb included).
        if pending:
            raise KeyboardInterrupt if pending[0] == signal.SIGINT else Terminated(pending[0])


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block Ctrl-C, SIGTERM and SIGHUP while starting worker processes: they inherit the
    blocked mask, so a signal sent to the whole process group while they boot waits until
    ``child_process_setup`` has decided what they do with it. Ours are delivered at the end."""
    watched = {signal.SIGINT, *TERMINATING}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def child_process_setup(parent_pid: int) -> None:
    """In a worker process: leave Ctrl-C and SIGHUP to the parent (it stops its workers in
    order), and exit when the parent is gone, however it died (SIGKILL included).
    ``parent_pid`` 0: no parent to watch (a worker run on its own, in tests)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, *TERMINATING})
    if parent_pid <= 0:
        return
    threading.Thread(
        target=_exit_with_parent, args=(parent_pid,), name="parent watchdog", daemon=True
    ).start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCHDOG_PERIOD_S)
    os._exit(128 + signal.SIGHUP)  # no cleanup to run: the work belongs to the dead parent
