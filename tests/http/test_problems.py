"""The mapping from errors to problem details, one row per error (no I/O)."""

from __future__ import annotations

import json

import pytest

from domain.errors import InvalidArgumentError
from domain.ledger.errors import (
    IdempotencyKeyReusedError,
    InsufficientFundsError,
    InvalidAmountError,
    SameAccountTransferError,
    UnknownAccountError,
)
from http_api.ledger import LEDGER_PROBLEMS
from http_api.problems import PROBLEM_JSON, ProblemMapper, problem_response
from ports.errors import (
    CircuitOpenError,
    CommitOutcomeUnknownError,
    ConnectionReclaimedError,
    DatabaseUnavailableError,
    DataIntegrityError,
    NoHealthyReplicaError,
    PoolQueueFullError,
    PoolTimeoutError,
    QueryTimeoutError,
    RateLimitExceededError,
    ShuttingDownError,
    TransactionConflictError,
)

SECRET = "hunter2-do-not-show"
map_error = ProblemMapper(LEDGER_PROBLEMS, retry_after_s=2)


@pytest.mark.parametrize(
    ("error", "status", "slug", "retry_after"),
    [
        (UnknownAccountError("a"), 404, "unknown-account", None),
        (InsufficientFundsError("a", 1, 2), 409, "insufficient-funds", None),
        (IdempotencyKeyReusedError("k"), 422, "idempotency-key-reused", None),
        (InvalidAmountError("amount must be positive"), 422, "invalid-amount", None),
        (SameAccountTransferError("same"), 422, "same-account", None),
        (InvalidArgumentError("bad id"), 422, "invalid-argument", None),
        (RateLimitExceededError("default", 0.2), 429, "rate-limited", 1),
        (RateLimitExceededError("default", 3.5), 429, "rate-limited", 4),
        (CircuitOpenError("writer", 4.01), 503, "dependency-unavailable", 5),
        (CircuitOpenError("writer", 0.0), 503, "dependency-unavailable", 1),
        (DatabaseUnavailableError(f"password={SECRET}"), 503, "database-unavailable", 2),
        (QueryTimeoutError(SECRET), 503, "database-unavailable", 2),
        (ConnectionReclaimedError(SECRET), 503, "database-unavailable", 2),
        (PoolTimeoutError(SECRET), 503, "overloaded", 2),
        (PoolQueueFullError(SECRET), 503, "overloaded", 2),
        (ShuttingDownError(SECRET), 503, "shutting-down", 2),
        (NoHealthyReplicaError(SECRET), 503, "no-replica", 2),
        (TransactionConflictError(SECRET), 503, "conflict-retries-exhausted", 2),
        (CommitOutcomeUnknownError(f"postgresql://app:{SECRET}@db/ledger"), 503, "commit-outcome-unknown", 2),
        (DataIntegrityError(SECRET), 500, "internal-error", None),
        (RuntimeError(SECRET), 500, "internal-error", None),
    ],
)
def test_each_error_becomes_its_problem_and_only_a_domain_error_tells_its_message(
    error: Exception, status: int, slug: str, retry_after: int | None
) -> None:
    problem = map_error(error)
    assert (problem.status, problem.slug, problem.retry_after_s) == (status, slug, retry_after)
    response = problem_response(problem, "rid-1")
    body = json.loads(bytes(response.body))
    assert response.media_type == PROBLEM_JSON
    assert {"type", "title", "status", "detail", "request_id"} <= body.keys()
    assert body["status"] == status
    assert body["request_id"] == "rid-1"
    assert SECRET not in bytes(response.body).decode()
    assert response.headers.get("retry-after") == (None if retry_after is None else str(retry_after))


def test_an_unknown_commit_outcome_says_that_repeating_with_the_same_key_is_safe() -> None:
    detail = map_error(CommitOutcomeUnknownError("lost")).detail
    assert "same Idempotency-Key is safe" in detail


def test_an_open_circuit_names_its_target() -> None:
    problem = map_error(CircuitOpenError("replica-1", 1.0))
    assert problem.extensions == {"target": "replica-1"}
