"""``demo_dsn``: a fresh database with the demo tables and their triggers, for the serve,
presence and browser tests; the test's own ``postgresql`` connection is left in autocommit, so
the writes a test makes are seen by the server at once."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.serve_helpers import install_demo


@pytest.fixture
def demo_dsn(postgresql: psycopg.Connection[Any], dsn: str) -> str:
    install_demo(postgresql)
    postgresql.autocommit = True
    return dsn
