"""Fixtures of the contract tier: ``ledger`` is each unit-of-work backend in turn."""

from __future__ import annotations

import pytest

from container import Container
from tests.contract.ledger_units import LedgerBackend, fake_backend, sql_backend


@pytest.fixture(params=["fake", "sql"])
def ledger(request: pytest.FixtureRequest) -> LedgerBackend:
    """The fake unit of work, or the container's SQL one on a migrated database of the test's own."""
    if request.param == "fake":
        return fake_backend()
    container: Container = request.getfixturevalue("container")
    database_url: str = request.getfixturevalue("database_url")
    return sql_backend(container, database_url)
