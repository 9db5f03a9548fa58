"""Other roles of the cluster, for tests of what they may and may not do.

``make_role`` needs an ``owner`` fixture (the installer's autocommit connection), which each
test module defines for the database it sets up.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

RoleMaker = Callable[..., str]
_roles = itertools.count(1)


@pytest.fixture
def make_role(owner: psycopg.Connection[Any]) -> Iterator[RoleMaker]:
    """``make_role(*grants)``: a new LOGIN role (cluster-wide, so uniquely named and dropped
    afterwards) with exactly the given GRANT statements ({role} is its name)."""
    made: list[str] = []

    def make(*grants: str) -> str:
        name = f"bw_role_{os.getpid()}_{next(_roles)}"
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        made.append(name)
        for grant in grants:
            owner.execute(grant.format(role=sql.Identifier(name).as_string(owner)))
        return name

    yield make
    for name in made:
        owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def connect_as(dsn: str, role: str) -> psycopg.Connection[Any]:
    return psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=role), autocommit=True)
