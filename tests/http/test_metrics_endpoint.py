"""``GET /metrics`` on the HTTP service: the pool and use-case series of a real request, Prometheus text."""

from __future__ import annotations

from http_api import create_app
from telemetry import prometheus_telemetry
from tests.http.support import in_process
from tests.http.test_ledger_endpoints import deposit, open_account
from tests.support import make_settings


async def test_metrics_serves_the_pool_and_use_case_series_after_real_requests(database_url: str) -> None:
    telemetry = prometheus_telemetry()
    try:
        async with in_process(create_app(make_settings(database_url), telemetry=telemetry)) as running:
            client = running.client
            account = await open_account(client)
            assert (await deposit(client, account, 7)).status_code == 201

            scraped = await client.get("/metrics")

        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        text = scraped.text
        for name in (
            'db_client_connection_count{db_client_connection_pool_name="writer",db_client_connection_state="idle"',
            "db_client_connection_wait_time_seconds_bucket",
            "db_client_connection_max",
        ):
            assert name in text, name
        assert account not in text  # no id as a label
    finally:
        telemetry.shutdown()


async def test_without_telemetry_there_is_no_metrics_route(client: object) -> None:
    from httpx import AsyncClient

    assert isinstance(client, AsyncClient)
    assert (await client.get("/metrics")).status_code == 404
