"""The Redis keys of one database's bus: every name starts with the deployment's prefix and
the database's name, so several databases (and test runs) can share one Redis."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str
    database: str

    def stream(self, channel: str) -> str:
        """The change events of ``channel``: one entry per batch, id ``<last seq>-0``."""
        return f"{self._base}:events:{channel}"

    def head(self, channel: str) -> str:
        """The publisher's state: who publishes, the log's and the stream's newest seq."""
        return f"{self._base}:head:{channel}"

    @property
    def presence(self) -> str:
        """Hash ``server id`` → JSON of its viewers."""
        return f"{self._base}:presence"

    @property
    def presence_alive(self) -> str:
        """Sorted set ``server id`` → expiry (epoch seconds)."""
        return f"{self._base}:presence:alive"

    @property
    def presence_wake(self) -> str:
        """Pub/sub channel: a server's id when its viewers changed."""
        return f"{self._base}:presence:wake"

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{self.database}"
