"""The server's log lines, with the token redacted from every one of them.

A token in the query string (``?token=T``, what EventSource clients must use) would otherwise
land in access logs (``--debug``) and in any error line that quotes a URL.
"""

from __future__ import annotations

import logging
import re
import sys

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

_TOKEN_IN_QUERY = re.compile(r"((?:^|[?&;\s])token=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
REDACTED = "…"


def redact(text: str) -> str:
    return _BEARER.sub(r"\1" + REDACTED, _TOKEN_IN_QUERY.sub(r"\1" + REDACTED, text))


class RedactToken(logging.Filter):
    """Rewrites a record's message with the token taken out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, request line (token redacted), status, bytes, time."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        peer = request.remote or "-"
        line = f"{request.method} {request.path_qs} HTTP/{request.version.major}." \
               f"{request.version.minor}"
        self.logger.info('%s "%s" %s %s %.3fs', peer, redact(line), response.status,
                         response.body_length, time)


def stream_opened(request: BaseRequest) -> None:
    """Streams are logged when they open (aiohttp logs a request when it ends: for a stream
    that may be hours later, or never when the client goes away)."""
    access = logging.getLogger("aiohttp.access")
    if access.isEnabledFor(logging.INFO):
        line = f"{request.method} {request.path_qs} HTTP/{request.version.major}." \
               f"{request.version.minor}"
        access.info('%s "%s" 200 stream opened', request.remote or "-", redact(line))


def configure(debug: bool) -> logging.Logger:
    """aiohttp's loggers write to stderr through the redacting filter; access lines only with
    ``debug``. Returns the access logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactToken())
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger("aiohttp")
    for existing in list(root.handlers):
        if isinstance(existing, logging.StreamHandler) and any(
                isinstance(f, RedactToken) for f in existing.filters):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(logging.INFO if debug else logging.WARNING)
    return logging.getLogger("aiohttp.access")
