"""``serve --workers N``: N processes serving one port, each with its own ChangeStream.

The parent binds N listening sockets on the same port with SO_REUSEPORT (the kernel spreads
new connections evenly over them), hands one to each worker and closes its own copies: a
client talks to exactly one worker, and every worker relays every event, so every client gets
every event exactly once. The parent only supervises: a signal stops the workers (SIGTERM),
a worker that dies stops the others; a worker stops by itself when the parent is gone.
"""

from __future__ import annotations

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
from pgwatch_cli.commands.serve.runner import (
    Running,
    ServeFailed,
    ServeOptions,
    bind,
    run_loop,
    serve_on,
    url_of,
)
from pgwatch_cli.commands.serve.streams import WorkerInfo

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def run(options: ServeOptions, ready: Callable[[Running], None]) -> int | None:
    first = bind(options.host, options.port, reuse_port=True)
    sockets = [first]
    try:
        port = first.getsockname()[1]
        for _ in range(options.workers - 1):
            sockets.append(bind(options.host, port, reuse_port=True))
        return _supervise(options, sockets, ready)
    finally:
        for sock in sockets:
            sock.close()


def _supervise(
    options: ServeOptions, sockets: list[socket.socket], ready: Callable[[Running], None]
) -> int | None:
    context = mp.get_context("spawn")
    counts = context.Array("q", len(sockets), lock=False)
    started = context.Queue()
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(sig: int, _frame: Any) -> None:
        if not stopped_by:
            stopped_by.append(sig)
        stop.set()

    processes = []
    with lifecycle.handling((signal.SIGINT, signal.SIGTERM), on_signal):
        try:
            for index, sock in enumerate(sockets):
                process = context.Process(
                    target=_worker_main, name=f"bookwatch-serve-{index}",
                    args=(options, sock, WorkerInfo(index, len(sockets), counts), started),
                )
                process.start()
                processes.append(process)
            url = url_of(sockets[0])
            waiting = set(range(len(sockets)))
            deadline = time.monotonic() + START_TIMEOUT_S
            while waiting and not stop.is_set():
                with contextlib.suppress(Exception):
                    waiting.discard(started.get(timeout=0.2))
                dead = [p for p in processes if p.exitcode is not None]
                if dead:
                    raise ServeFailed(
                        f"A worker process failed to start (exit {dead[0].exitcode}).")
                if time.monotonic() > deadline:
                    raise ServeFailed("The worker processes did not start within 60 s.")
            for sock in sockets:
                # The workers hold their own copies; a socket left open here would get its
                # share of connections and nobody to accept them.
                sock.close()
            if not stop.is_set():
                ready(Running(url, None, stop.set))
            while not stop.wait(0.2):
                dead = [p for p in processes if p.exitcode is not None]
                if dead:
                    raise ServeFailed(
                        f"Worker {dead[0].name} stopped unexpectedly"
                        f" (exit {dead[0].exitcode}); stopping the others.")
            return stopped_by[0] if stopped_by else None
        finally:
            _stop_all(processes)


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
                 started: Any) -> None:
    # Ctrl-C reaches the whole process group; until serve_on installs its own handlers it
    # must not end the worker with a traceback (the parent stops the workers anyway).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock.setblocking(False)

    def announce(running: Running) -> None:
        started.put(worker.index)

    try:
        run_loop(serve_on(options, sock, announce, worker))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        # The parent reports the failure (one Error line); this says what it was.
        console.warn(f"worker {worker.index} stopped: {exc}")
        raise SystemExit(1) from None
