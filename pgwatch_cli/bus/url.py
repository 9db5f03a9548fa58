"""``--bus``: ``postgres`` (the default: LISTEN + log reads) or ``redis://HOST:PORT/DB``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from pgwatch_cli.errors import UsageProblem

POSTGRES = "postgres"
DEFAULT_PREFIX = "bookwatch"
EXTRA_HINT = "Install the extra: pip install 'bookwatch[redis]'"
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class RedisBus:
    """Where the Redis bus lives; ``prefix`` starts every key (one per deployment)."""

    url: str  # for redis-py, without bookwatch's own options (may hold a password: never print)
    host: str
    port: int
    db: int
    prefix: str = DEFAULT_PREFIX

    @property
    def shown(self) -> str:
        """The URL without credentials, for /healthz and messages."""
        return f"redis://{self.host}:{self.port}/{self.db}"


def parse(text: str) -> RedisBus | None:
    """None for the PostgreSQL bus; UsageProblem (exit 2) for anything unusable."""
    value = text.strip()
    if value.lower() in (POSTGRES, "postgresql", "pg"):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port or 6379
    except ValueError as exc:
        raise UsageProblem(f"--bus {_safe(value)!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise UsageProblem(
            f"--bus must be postgres or redis://HOST:PORT/DB, not {_safe(value)!r}"
        )
    if not parts.hostname:
        raise UsageProblem(f"--bus {_safe(value)!r} names no host")
    path = parts.path.strip("/") or "0"
    if not path.isdigit() or int(path) > 15:
        raise UsageProblem(f"--bus: the database must be a number 0-15, not {path!r}")
    options = parse_qs(parts.query)
    unknown = sorted(set(options) - {"prefix"})
    if unknown:
        raise UsageProblem(f"--bus: unknown option {unknown[0]!r} (known: prefix)")
    prefix = options.get("prefix", [DEFAULT_PREFIX])[-1]
    if not _PREFIX.match(prefix):
        raise UsageProblem("--bus: prefix must be 1-64 letters, digits, '_', '.' or '-'")
    return RedisBus(parts._replace(query="").geturl(), parts.hostname, port, int(path), prefix)


def require_client() -> None:
    """UsageProblem naming the extra when redis-py (with asyncio) is not installed."""
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise UsageProblem(
            "--bus redis:// needs the redis extra, which is not installed.", hint=EXTRA_HINT
        ) from None


def _safe(text: str) -> str:
    """``text`` with any password replaced, for error messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", text)
