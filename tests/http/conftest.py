"""Fixtures of the HTTP tests: the app in process on this test's own migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from http_api import create_app
from tests.http.support import in_process
from tests.support import make_settings


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in this process, with its lifespan run, on the test's database."""
    app = create_app(make_settings(database_url))
    async with in_process(app) as http:
        yield http
