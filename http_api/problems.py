"""RFC 9457 problem details: every error response, and the mapping from contract and domain errors.

The mapping is the one place that turns an exception into a status code. A domain error's message
describes the client's own request, so it becomes the ``detail``; an infrastructure error's
message may name hosts, pool state or driver text, so its ``detail`` is a fixed sentence instead
(the message goes to the log, scrubbed, with the request id). A 503 or 429 always carries an
integer ``Retry-After``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from starlette.responses import Response

from domain.errors import DomainError, InvalidArgumentError
from ports.errors import (
    CircuitOpenError,
    CommitOutcomeUnknownError,
    DeadlineExceededError,
    InfrastructureError,
    NoHealthyReplicaError,
    RateLimitExceededError,
    SaturationError,
    ShuttingDownError,
    TransactionConflictError,
)

PROBLEM_JSON: Final = "application/problem+json"
#: Problem type URIs: identifiers (RFC 9457 §3.1.1 allows a URI that is not dereferenceable).
TYPE_PREFIX: Final = "urn:alchemy-hex:problem:"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem details object; ``retry_after_s`` becomes the ``Retry-After`` header."""

    status: int
    slug: str
    title: str
    detail: str
    retry_after_s: int | None = None
    extensions: Mapping[str, object] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def body(self, request_id: str) -> dict[str, object]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id,
            **self.extensions,
        }


def retry_after(seconds: float) -> int:
    """RFC 9110's delay-seconds: a whole number, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


@dataclass(frozen=True, slots=True)
class DomainProblem:
    """How one domain's rule violation is told: the message of the error becomes the ``detail``."""

    error: type[DomainError]
    status: int
    slug: str
    title: str


#: The kernel's own domain errors; each domain adds its table in front (the most specific first).
KERNEL_PROBLEMS: Final = (DomainProblem(InvalidArgumentError, 422, "invalid-argument", "Invalid argument"),)


class ProblemMapper:
    """Turns an exception into the :class:`Problem` the caller is told (500 for anything unknown)."""

    def __init__(self, domain: Sequence[DomainProblem] = (), *, retry_after_s: int = 1) -> None:
        self._domain = (*domain, *KERNEL_PROBLEMS)
        self._wait = retry_after_s

    def __call__(self, error: BaseException) -> Problem:
        if isinstance(error, DomainError):
            return self._domain_problem(error)
        if isinstance(error, RateLimitExceededError):
            return Problem(
                429,
                "rate-limited",
                "Too many requests",
                "the rate limit is exceeded; retry later",
                retry_after(error.retry_after_s),
            )
        if isinstance(error, CircuitOpenError):
            return Problem(
                503,
                "dependency-unavailable",
                "Database unavailable",
                f"calls to the database target {error.target!r} are suspended after repeated failures",
                retry_after(error.retry_after_s),
                {"target": error.target},
            )
        if isinstance(error, DeadlineExceededError):
            # The caller's own budget ran out (Request-Timeout): nothing was committed (a unit
            # whose deadline passes before COMMIT rolls back), and retrying within it is pointless.
            return Problem(
                504,
                "deadline-exceeded",
                "Deadline exceeded",
                f"the request's deadline ran out during {error.stage}; nothing was applied",
                None,
                {"stage": error.stage},
            )
        if isinstance(error, CommitOutcomeUnknownError):
            return Problem(
                503,
                "commit-outcome-unknown",
                "Outcome unknown",
                "the connection failed while the commit was in flight, so the request may or may not "
                "have been applied; repeating it with the same Idempotency-Key is safe: it is applied "
                "at most once",
                self._wait,
            )
        return _service_problem(error, self._wait)

    def _domain_problem(self, error: DomainError) -> Problem:
        for rule in self._domain:
            if isinstance(error, rule.error):
                return Problem(rule.status, rule.slug, rule.title, str(error))
        return Problem(422, "rule-violated", "Request refused", str(error))


def _service_problem(error: BaseException, wait: int) -> Problem:
    if isinstance(error, ShuttingDownError):
        return Problem(503, "shutting-down", "Shutting down", "the service is shutting down", wait)
    if isinstance(error, SaturationError):
        return Problem(
            503, "overloaded", "Overloaded", "no database connection became free in time; retry later", wait
        )
    if isinstance(error, TransactionConflictError):
        return Problem(
            503,
            "conflict-retries-exhausted",
            "Contention",
            "the database kept rolling the transaction back under contention; retry later",
            wait,
        )
    if isinstance(error, NoHealthyReplicaError):
        return Problem(503, "no-replica", "No replica", "no replica can serve the read right now", wait)
    if isinstance(error, InfrastructureError):
        return Problem(
            503,
            "database-unavailable",
            "Database unavailable",
            "the database could not be reached or did not answer in time; retry later",
            wait,
        )
    return INTERNAL_ERROR


INTERNAL_ERROR: Final = Problem(
    500, "internal-error", "Internal error", "the service failed unexpectedly; the request id identifies it"
)


def problem_response(
    problem: Problem, request_id: str, *, close: bool = False, headers: Mapping[str, str] | None = None
) -> Response:
    """The ``application/problem+json`` response for ``problem``."""
    extra = dict(headers or {})
    if problem.retry_after_s is not None:
        extra["retry-after"] = str(problem.retry_after_s)
    if close:
        extra["connection"] = "close"
    content = json.dumps(problem.body(request_id), separators=(",", ":"))
    return Response(content, status_code=problem.status, headers=extra, media_type=PROBLEM_JSON)
