"""What a caller can ask of a use case beyond its arguments: a rate-limit key of its own."""

from __future__ import annotations

import pytest

from container import create_container, start_resources, stop_resources
from ports.errors import RateLimitExceededError
from tests.support import make_settings


async def test_each_rate_limit_key_has_its_own_budget(database_url: str) -> None:
    settings = make_settings(
        database_url,
        rate_limiter={"implementation": "token_bucket", "rate_per_s": 0.01, "burst": 2, "max_wait_s": 0},
    )
    container = create_container(settings)
    await start_resources(container)
    try:
        open_account = container.open_account()
        for _ in range(2):
            await open_account("noisy", rate_limit_key="tenant-a")
        with pytest.raises(RateLimitExceededError, match="tenant-a"):
            await open_account("noisy", rate_limit_key="tenant-a")
        # Another tenant is not starved by the first one's burst.
        assert await open_account("quiet", rate_limit_key="tenant-b")
    finally:
        await stop_resources(container)
