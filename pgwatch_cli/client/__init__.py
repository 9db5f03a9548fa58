"""The browser client, ``bookwatch.js``: an ES module served by ``bookwatch serve``."""

from __future__ import annotations

import functools
from importlib import resources

MEDIA_TYPE = "text/javascript; charset=utf-8"


@functools.cache
def script() -> bytes:
    """The module's source, as ``GET /bookwatch.js`` sends it."""
    return (resources.files(__package__) / "bookwatch.js").read_bytes()
