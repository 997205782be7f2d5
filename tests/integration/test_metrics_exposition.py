"""The Prometheus exposition, scraped from a service on PostgreSQL: the exact names, bounded labels."""

from __future__ import annotations

import asyncio
from typing import Final

import pytest

from ports.connection_provider import Intent
from ports.errors import PoolTimeoutError
from tests.chaos.load import wait_until
from tests.support import make_settings
from tests.telemetry_support import label_values, observed_container, sample_names

#: The names a dashboard may rely on, as Prometheus shows them (semantic conventions first).
GOLDEN: Final = frozenset(
    {
        "db_client_connection_count",
        "db_client_connection_max",
        "db_client_connection_idle_max",
        "db_client_connection_idle_min",
        "db_client_connection_pending_requests",
        "db_client_connection_timeouts_total",
        "db_client_connection_create_time_seconds_bucket",
        "db_client_connection_create_time_seconds_count",
        "db_client_connection_wait_time_seconds_bucket",
        "db_client_connection_wait_time_seconds_sum",
        "db_client_connection_use_time_seconds_bucket",
        "db_client_operation_duration_seconds_bucket",
        "db_client_operation_duration_seconds_count",
        "alchemy_hex_admission_queue_length",
        "alchemy_hex_admission_wait_time_seconds_bucket",
        "alchemy_hex_admission_rejections_total",
        "alchemy_hex_circuit_breaker_state",
        "alchemy_hex_circuit_breaker_transitions_total",
        "alchemy_hex_client_deadline_cutoffs_total",
        "alchemy_hex_connections_lost_total",
        "alchemy_hex_rate_limiter_decisions_total",
        "alchemy_hex_rate_limiter_waits_total",
        "alchemy_hex_rate_limiter_wait_time_seconds_total",
        "alchemy_hex_reads_total",
        "alchemy_hex_retries_total",
        "alchemy_hex_retry_budget_refusals_total",
        "alchemy_hex_retry_budget_balance",
        "alchemy_hex_use_case_duration_seconds_bucket",
        "alchemy_hex_use_case_duration_seconds_count",
    }
)


async def test_the_exposition_has_the_semantic_convention_and_project_names(database_url: str) -> None:
    settings = make_settings(
        database_url,
        database={"pool_size": 1, "max_overflow": 0, "acquire_timeout_s": 0.2},
        rate_limiter={"implementation": "token_bucket", "rate_per_s": 10_000, "burst": 10_000},
        # A budget of exactly one retry: the first call that times out retries, the second may not.
        retry={"budget": "token", "max_attempts": 2, "budget_ratio": 0.0, "budget_min_retries_per_s": 0.1},
    )
    async with observed_container(settings) as observed:
        container = observed.container
        account = await container.open_account()("owner-secret-name")
        await container.deposit()(account, 100, idempotency_key="key-never-a-label")
        provider = container.connection_provider()
        get_balance = container.get_balance()
        # One call queues behind a held connection and gets it when it is returned...
        async with provider.connection(Intent.WRITE):
            queued = asyncio.create_task(get_balance(account))
            assert await wait_until(lambda: provider.stats().targets[0].waiting == 1, timeout_s=5.0)
        assert await queued == 100
        # ...and two time out while it is held: the first is retried and fails, the second is
        # refused its retry by the spent budget.
        async with provider.connection(Intent.WRITE):
            for _ in range(2):
                with pytest.raises(PoolTimeoutError):
                    await get_balance(account)
        exposition = observed.scrape()

    names = sample_names(exposition)
    assert names >= GOLDEN, sorted(GOLDEN - names)
    # Nothing else under the semantic conventions' namespace: no stray unit suffix or old name.
    semconv = {name for name in names if name.startswith("db_client_")}
    assert semconv <= GOLDEN | {n.replace("_bucket", suffix) for n in GOLDEN for suffix in ("_sum", "_count")}
    values = label_values(exposition)
    assert not {v for v in values if str(account) in v or "key-never" in v or "owner-secret" in v}
    assert (
        'db_client_connection_count{db_client_connection_pool_name="writer",db_client_connection_state="idle"'
        in (exposition.replace(',otel_scope_name="alchemy_hex"', ""))
    )
    assert (
        'alchemy_hex_retries_total{alchemy_hex_operation="get_balance",error_type="PoolTimeoutError"'
        in exposition
    )
