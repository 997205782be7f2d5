"""The Prometheus exposition, scraped from a service on PostgreSQL: the exact names, bounded labels."""

from __future__ import annotations

from typing import Final

from tests.support import make_settings
from tests.telemetry_support import EXERCISED, exercise, label_values, observed_container, sample_names

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
    settings = make_settings(database_url, **EXERCISED)
    async with observed_container(settings) as observed:
        account = await exercise(observed)
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
        'alchemy_hex_retries_total{alchemy_hex_operation="deposit",error_type="PoolTimeoutError"'
        in exposition
    )
