"""Liveness, readiness and the OpenAPI schema, in process; a database nobody answers for the probes."""

from __future__ import annotations

import httpx

from http_api import create_app
from tests.http.support import InProcess, free_port, in_process
from tests.http.test_errors_and_request_ids import assert_problem
from tests.support import make_settings

HEALTH_JSON = "application/health+json"
SECRET = "pw-never-shown-7f3a"


async def test_readiness_fails_before_start_up_and_passes_once_started(database_url: str) -> None:
    app = create_app(make_settings(database_url))
    async with in_process(app, run_lifespan=False) as cold:
        response = await cold.client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == HEALTH_JSON
        assert response.json()["status"] == "fail"
        assert (await cold.client.get("/livez")).status_code == 200
    async with in_process(create_app(make_settings(database_url))) as warm:
        ready = await warm.client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "pass"
        assert body["checks"]["writer:breaker"][0]["observedValue"] == "closed"
        assert body["checks"]["writer:connections"][0]["observedUnit"] == "connections"


async def test_probes_never_query_the_database(service: InProcess) -> None:
    provider = service.state["health"].provider
    await service.client.post("/accounts", json={"owner": "a"})
    before = sum(t.served for t in provider.stats().targets)
    for _ in range(20):
        assert (await service.client.get("/readyz")).status_code == 200
        assert (await service.client.get("/livez")).status_code == 200
    assert sum(t.served for t in provider.stats().targets) == before


async def test_with_the_database_unreachable_calls_fail_fast_with_503_and_liveness_stays_200() -> None:
    dead = f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/ledger"
    breaker = {"window_size": 2, "minimum_calls": 2, "recovery_time_s": 30}
    settings = make_settings(
        dead, circuit_breaker=breaker, retry={"max_attempts": 1}, database={"connect_timeout_s": 0.5}
    )
    async with in_process(create_app(settings)) as running:
        first = await running.client.post("/accounts", json={"owner": "a"})
        assert_problem(first, 503, "database-unavailable")
        assert first.headers["retry-after"] == "1"
        await running.client.post("/accounts", json={"owner": "b"})
        refused = await running.client.post("/accounts", json={"owner": "c"})
        body = assert_problem(refused, 503, "dependency-unavailable")
        assert body["target"] == "writer"
        # Open for 30 s from a moment ago: the remaining time rounded up.
        assert refused.headers["retry-after"] == "30"
        assert (await running.client.get("/livez")).status_code == 200
        ready = await running.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "warn"
        assert ready.json()["checks"]["writer:breaker"][0]["observedValue"] == "open"
        for response in (first, refused, ready):
            assert SECRET not in response.text


async def test_the_openapi_schema_lists_every_endpoint_and_the_idempotency_header(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = {path: set(methods) for path, methods in schema["paths"].items()}
    assert paths == {
        "/accounts": {"post"},
        "/accounts/{account_id}/deposits": {"post"},
        "/transfers": {"post"},
        "/accounts/{account_id}/balance": {"get"},
        "/accounts/{account_id}/statement": {"get"},
        "/livez": {"get"},
        "/readyz": {"get"},
    }
    transfer = schema["paths"]["/transfers"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in transfer["parameters"]}
    assert transfer["responses"]["409"]["content"]["application/problem+json"]
    assert "Problem" in schema["components"]["schemas"]
    statement = schema["paths"]["/accounts/{account_id}/statement"]["get"]
    assert "limit" in {p["name"] for p in statement["parameters"]}
