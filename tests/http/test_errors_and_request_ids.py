"""Problem details and request ids through the app in process, on a real PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest

from http_api import create_app
from tests.http.support import InProcess, in_process
from tests.http.test_ledger_endpoints import deposit, open_account
from tests.support import make_settings


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["type"] == f"urn:alchemy-hex:problem:{slug}"
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


async def test_an_unknown_account_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/accounts/{uuid.uuid4()}/balance")
    assert_problem(response, 404, "unknown-account")


async def test_insufficient_funds_is_a_409(client: httpx.AsyncClient) -> None:
    ada, bob = await open_account(client), await open_account(client, "bob")
    response = await client.post(
        "/transfers", json={"source": ada, "destination": bob, "amount": 1}, headers={"Idempotency-Key": "t"}
    )
    assert_problem(response, 409, "insufficient-funds")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/accounts", {"owner": 5}),
        ("/accounts", {"owner": "ada", "extra": 1}),
        ("/accounts", {}),
        ("/accounts/not-a-uuid/deposits", {"amount": 1}),
        ("/accounts/{account}/deposits", {"amount": 1.5}),
        ("/accounts/{account}/deposits", {"amount": "10"}),
    ],
)
async def test_a_request_that_does_not_match_its_schema_is_a_422_with_its_errors(
    client: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    account = await open_account(client)
    response = await client.post(path.format(account=account), json=body, headers={"Idempotency-Key": "k"})
    problem = assert_problem(response, 422, "validation")
    assert problem["errors"]


async def test_a_rule_of_the_domain_is_a_422_with_its_message(client: httpx.AsyncClient) -> None:
    ada = await open_account(client)
    response = await client.post(
        "/transfers", json={"source": ada, "destination": ada, "amount": 1}, headers={"Idempotency-Key": "s"}
    )
    assert "itself" in str(assert_problem(response, 422, "same-account")["detail"])
    negative = await deposit(client, ada, -5)
    assert_problem(negative, 422, "invalid-amount")
    blank = await client.post("/accounts", json={"owner": "  "})
    assert_problem(blank, 422, "invalid-argument")
    limit = await client.get(f"/accounts/{ada}/statement", params={"limit": 0})
    assert_problem(limit, 422, "validation")


async def test_an_unknown_route_is_a_problem_too(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404, "http-404")
    assert_problem(await client.delete("/accounts"), 405, "http-405")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", True),
        (str(uuid.uuid4()), True),
        ("x" * 129, False),
        ("bad id with spaces", False),
        ("<script>", False),
        ("", False),
    ],
)
async def test_a_valid_request_id_is_kept_and_any_other_replaced(
    client: httpx.AsyncClient, sent: str, kept: bool
) -> None:
    response = await client.get("/livez", headers={"X-Request-ID": sent})
    returned = response.headers["x-request-id"]
    assert (returned == sent) is kept
    assert 1 <= len(returned) <= 128


async def test_every_response_carries_a_request_id_and_a_500_tells_nothing_else(database_url: str) -> None:
    app = create_app(make_settings(database_url))

    async def boom() -> None:
        raise RuntimeError("password=hunter2 in a driver message")

    app.add_api_route("/boom", boom)
    async with in_process(app) as running:
        response = await running.client.get("/boom", headers={"X-Request-ID": "abc-123"})
        body = assert_problem(response, 500, "internal-error")
        assert body["request_id"] == "abc-123"
        assert "hunter2" not in response.text
        assert "RuntimeError" not in response.text


async def test_a_rate_limited_call_is_a_429_with_retry_after(database_url: str) -> None:
    limits = {"implementation": "token_bucket", "rate_per_s": 0.1, "burst": 1, "max_wait_s": 0}
    async with in_process(create_app(make_settings(database_url, rate_limiter=limits))) as running:
        assert (await running.client.post("/accounts", json={"owner": "a"})).status_code == 201
        refused = await running.client.post("/accounts", json={"owner": "b"})
        assert_problem(refused, 429, "rate-limited")
        assert int(refused.headers["retry-after"]) >= 1


async def test_requests_before_the_lifespan_started_are_refused_with_503(database_url: str) -> None:
    async with in_process(create_app(make_settings(database_url)), run_lifespan=False) as running:
        response = await running.client.get(f"/accounts/{uuid.uuid4()}/balance")
        assert_problem(response, 503, "shutting-down")
        assert response.headers["retry-after"] == "1"


async def test_in_process_service_fixture_reaches_the_database(service: InProcess) -> None:
    assert (await service.client.post("/accounts", json={"owner": "x"})).status_code == 201
