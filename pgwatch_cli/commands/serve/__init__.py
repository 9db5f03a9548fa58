"""``bookwatch serve``: change events for browsers over Server-Sent Events, with presence,
resume from the change log, token auth, and the seed's demo page."""

from pgwatch_cli.commands.serve.runner import Running, ServeOptions, serve
from pgwatch_cli.commands.serve.security import check_exposure

__all__ = ["Running", "ServeOptions", "check_exposure", "serve"]
