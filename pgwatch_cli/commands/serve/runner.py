"""``bookwatch serve``'s entry point: check what must be refused before anything starts, then
serve in this process, or supervise ``--workers`` processes."""

from __future__ import annotations

from collections.abc import Callable

from pgwatch_cli import console, db
from pgwatch_cli.commands.serve import process, supervisor
from pgwatch_cli.commands.serve.options import Running, ServeOptions
from pgwatch_cli.commands.serve.security import check_exposure
from pgwatch_cli.commands.serve.streams import WorkerInfo
from pgwatch_cli.demo import api as demo_api


def _announce(running: Running) -> None:
    console.note(f"serving on {running.url}")


def serve(options: ServeOptions, *, ready: Callable[[Running], None] = _announce) -> int | None:
    """Serve until SIGINT/SIGTERM/SIGHUP; returns the signal that stopped it (None: stopped
    otherwise).

    Raises ``UsageProblem`` for an unsafe exposure and ``ServerBindFailed`` for a taken port
    before anything else happens.
    """
    check_exposure(options.host, options.token, options.insecure,
                   signed=options.token_secret is not None)
    process.raise_fd_limit()
    if options.demo or options.workers > 1:
        # One clear error here rather than one per worker process.
        with db.connect(options.dsn) as conn:
            if options.demo:
                demo_api.check_tables(conn, options.schema)
    if options.workers > 1:
        return supervisor.run(options, ready)
    listening = process.bind(options.host, options.port)
    try:
        return process.run_loop(process.serve_on(options, listening, ready, WorkerInfo()))
    finally:
        listening.close()
