"""``bookwatch serve``: change events for browsers over Server-Sent Events, with presence,
resume from the change log, token auth, limits, workers, and the seed's demo page."""

from pgwatch_cli.commands.serve.options import Running, ServeOptions, WorkerRestarts, parse_workers
from pgwatch_cli.commands.serve.runner import serve
from pgwatch_cli.commands.serve.security import check_exposure

__all__ = ["Running", "ServeOptions", "WorkerRestarts", "check_exposure", "parse_workers",
           "serve"]
