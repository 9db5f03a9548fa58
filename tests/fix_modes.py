"""Capture tests that run once per change-log mode: ``mode`` is ``log`` or ``wal``, ``target``
a fresh database on a server that supports it (wal needs the ``wal_level = logical`` cluster
of ``fix_logical``)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["log", "wal"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(mode: str, request: pytest.FixtureRequest) -> str:
    """DSN of a fresh database whose server supports ``mode``."""
    return str(request.getfixturevalue("logical_db" if mode == "wal" else "dsn"))
