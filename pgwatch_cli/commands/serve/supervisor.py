"""``serve --workers N``: N processes serving one port, each with its own ChangeStream.

The supervisor binds one listening socket per worker on the same port with SO_REUSEPORT (the
kernel spreads new connections evenly over them), hands each to its worker and closes its own
copy: a client talks to exactly one worker, and every worker relays every event, so every
client gets every event exactly once. A signal stops the workers (SIGTERM). A worker that dies
is started again on a new socket while the others keep serving, unless the workers die faster
than ``WorkerRestarts`` allows (a crash loop): then all stop and serve fails. Workers leave
signals to the supervisor and exit when it is gone (``lifecycle.child_process_setup``).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pgwatch_cli import console, lifecycle
from pgwatch_cli.commands.serve.options import Running, ServeFailed, ServeOptions
from pgwatch_cli.commands.serve.process import bind, run_loop, serve_on, url_of
from pgwatch_cli.commands.serve.streams import WorkerInfo

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.2


def run(options: ServeOptions, ready: Callable[[Running], None]) -> int | None:
    first = bind(options.host, options.port, reuse_port=True)
    sockets = [first]
    try:
        port = first.getsockname()[1]
        for _ in range(options.workers - 1):
            sockets.append(bind(options.host, port, reuse_port=True))
        return Supervisor(options, port).run(sockets, ready)
    finally:
        for sock in sockets:
            sock.close()


class Supervisor:
    def __init__(self, options: ServeOptions, port: int) -> None:
        self.options = options
        self.port = port
        self.context = mp.get_context("spawn")
        self.counts = self.context.Array("q", options.workers, lock=False)
        self.started = self.context.Queue()
        self.stop = threading.Event()
        self.stopped_by: list[int] = []
        self.processes: list[Any] = []
        self.deaths: collections.deque[float] = collections.deque()

    def on_signal(self, sig: int, _frame: Any) -> None:
        if not self.stopped_by:
            self.stopped_by.append(sig)
        self.stop.set()

    def run(self, sockets: list[socket.socket], ready: Callable[[Running], None]) -> int | None:
        url = url_of(sockets[0])
        with lifecycle.handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), self.on_signal):
            try:
                for index, sock in enumerate(sockets):
                    self.processes.append(self._start(index, sock))
                self._wait_started(len(sockets))
                for sock in sockets:
                    # The workers hold their own copies; a socket left open here would get
                    # its share of connections and nobody to accept them.
                    sock.close()
                if not self.stop.is_set():
                    ready(Running(url, None, self.stop.set))
                while not self.stop.wait(POLL_S):
                    self._replace_the_dead()
                return self.stopped_by[0] if self.stopped_by else None
            finally:
                _stop_all(self.processes)

    def _start(self, index: int, sock: socket.socket) -> Any:
        process = self.context.Process(
            target=_worker_main, name=f"bookwatch-serve-{index}",
            args=(self.options, sock, WorkerInfo(index, self.options.workers, self.counts),
                  self.started, os.getpid()),
        )
        # Signals wait while it boots, until child_process_setup decides what it does with them.
        with lifecycle.signals_blocked():
            process.start()
        return process

    def _wait_started(self, count: int) -> None:
        waiting = set(range(count))
        deadline = time.monotonic() + START_TIMEOUT_S
        while waiting and not self.stop.is_set():
            with contextlib.suppress(Exception):
                waiting.discard(self.started.get(timeout=POLL_S))
            dead = [p for p in self.processes if p.exitcode is not None]
            if dead:
                raise ServeFailed(f"A worker process failed to start (exit {dead[0].exitcode}).")
            if time.monotonic() > deadline:
                raise ServeFailed(f"The worker processes did not start within "
                                  f"{START_TIMEOUT_S:g} s.")

    def _replace_the_dead(self) -> None:
        with contextlib.suppress(Exception):
            while True:  # announcements of restarted workers: nobody waits for them
                self.started.get_nowait()
        restarts = self.options.worker_restarts
        for index, process in enumerate(self.processes):
            if process.exitcode is None:
                continue
            now = time.monotonic()
            self.deaths.append(now)
            while self.deaths and now - self.deaths[0] > restarts.window_s:
                self.deaths.popleft()
            if len(self.deaths) > restarts.limit:
                raise ServeFailed(
                    f"Workers died {len(self.deaths)} times within {restarts.window_s:g} s "
                    f"(last: {process.name}, exit {process.exitcode}); stopping them all.")
            console.warn(f"worker {index} stopped unexpectedly (exit {process.exitcode}); "
                         "starting it again, the others keep serving")
            process.join(0)
            sock = bind(self.options.host, self.port, reuse_port=True)
            try:
                self.processes[index] = self._start(index, sock)
            finally:
                sock.close()
            self.counts[index] = 0


def _stop_all(processes: list[Any]) -> None:
    for process in processes:
        if process.exitcode is None and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(5)


def _worker_main(options: ServeOptions, sock: socket.socket, worker: WorkerInfo,
                 started: Any, supervisor_pid: int) -> None:
    lifecycle.child_process_setup(supervisor_pid)
    sock.setblocking(False)

    def announce(running: Running) -> None:
        started.put(worker.index)

    try:
        run_loop(serve_on(options, sock, announce, worker))
    except Exception as exc:
        # The supervisor reports what it does about it; this says what it was.
        console.warn(f"worker {worker.index} stopped: {exc}")
        raise SystemExit(1) from None
