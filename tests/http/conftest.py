"""Fixtures of the HTTP tests: the app in process on this test's own migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from http_api import create_app
from tests.http.support import InProcess, in_process
from tests.support import make_settings


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[InProcess]:
    """The app in this process with its lifespan run, on the test's database."""
    async with in_process(create_app(make_settings(database_url))) as running:
        yield running


@pytest.fixture
def client(service: InProcess) -> httpx.AsyncClient:
    return service.client
