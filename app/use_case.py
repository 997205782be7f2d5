"""``UseCase``: the base of every use case, whatever the domain: one unit of work per attempt, retried safely.

A use case is a class with a ``__call__`` that validates its arguments (before any connection is
taken), then hands a body to :meth:`UseCase.run`. The body receives an open unit of work and uses
its repositories (``uow.repos``); ``run`` commits a write unit once the body returns, and runs the
body again, in a fresh unit of work, when the failure says that is safe (a transaction the server
rolled back, a connection that could not be had), within the retry policy and the retry budget.
Every call is timed and counted by outcome, binds a correlation id to its log lines, and is traced:
a span per call, a child span per unit of work (see :mod:`app.telemetry`).

Declare on the subclass what the call is: ``operation`` (its name in metrics and logs), ``intent``
(``WRITE``; ``READ``, which a replica may serve; ``READ_PRIMARY``, which must see the latest
state), ``idempotent`` (a repeat with the same idempotency key is harmless, so a commit whose
outcome is unknown may be retried) and ``default_priority`` (its admission class).

A caller's deadline (``deadline_s``, or an enclosing :class:`ports.deadline.deadline_scope`, the
shorter winning) bounds the whole call, retries and backoffs included: see :mod:`ports.deadline`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, TypeVar

from app.correlation import correlation_scope
from app.metrics import Metrics
from app.retry import RetryPolicy, run_with_retries
from app.retry_budget import RetryBudget
from app.telemetry import UseCaseTelemetry, default_telemetry
from ports.connection_provider import CausalToken, Intent, Priority
from ports.deadline import DeadlineStage, deadline_scope, require
from ports.unit_of_work import DEFAULT_OPTIONS, UnitOfWork, UnitOfWorkFactory, UnitOptions

__all__ = ["UseCase"]

R = TypeVar("R")
T = TypeVar("T")


class UseCase(Generic[R]):
    """Runs a body in a fresh unit of work per attempt, with retries of what is safe to repeat."""

    operation: ClassVar[str] = "use_case"
    intent: ClassVar[Intent] = Intent.WRITE
    idempotent: ClassVar[bool] = False
    default_priority: ClassVar[Priority] = Priority.NORMAL

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory[R],
        retry_policy: RetryPolicy,
        retry_budget: RetryBudget,
        metrics: Metrics,
        priority: Priority | None = None,
        telemetry: UseCaseTelemetry | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._retry_policy = retry_policy
        self._retry_budget = retry_budget
        self._metrics = metrics
        # Each use case declares its admission class; a deployment may override it per instance.
        self._priority = self.default_priority if priority is None else priority
        self._telemetry = default_telemetry() if telemetry is None else telemetry

    async def run(
        self,
        body: Callable[[UnitOfWork[R]], Awaitable[T]],
        *,
        correlation_id: str | None = None,
        options: UnitOptions = DEFAULT_OPTIONS,
        deadline_s: float | None = None,
    ) -> T:
        """The body's result, run in units of work made with ``options`` (see :class:`UnitOptions`).

        ``deadline_s``: the call must be over within this many seconds (or by the enclosing
        deadline, if sooner), else ``DeadlineExceededError`` names the stage that ran out.
        """
        result, _ = await self.run_with_token(
            body, correlation_id=correlation_id, options=options, deadline_s=deadline_s
        )
        return result

    async def run_with_token(
        self,
        body: Callable[[UnitOfWork[R]], Awaitable[T]],
        *,
        correlation_id: str | None = None,
        options: UnitOptions = DEFAULT_OPTIONS,
        deadline_s: float | None = None,
    ) -> tuple[T, CausalToken | None]:
        """The body's result and the committed unit's causal token (``None`` unless it was asked for)."""
        if deadline_s is None:
            return await self._run_with_token(body, correlation_id, options)
        with deadline_scope(deadline_s):
            return await self._run_with_token(body, correlation_id, options)

    async def _run_with_token(
        self,
        body: Callable[[UnitOfWork[R]], Awaitable[T]],
        correlation_id: str | None,
        options: UnitOptions,
    ) -> tuple[T, CausalToken | None]:
        with (
            correlation_scope(correlation_id),
            self._telemetry.call(self.operation, self.intent, self._priority),
        ):
            try:
                outcome = await run_with_retries(
                    lambda: self._attempt(body, options),
                    policy=self._retry_policy,
                    budget=self._retry_budget,
                    metrics=self._metrics,
                    operation=self.operation,
                    idempotent=self.idempotent,
                )
            except Exception as error:
                self._metrics.count_failure(self.operation, error)
                raise
            self._metrics.count_success(self.operation)
            return outcome

    async def _attempt(
        self, body: Callable[[UnitOfWork[R]], Awaitable[T]], options: UnitOptions
    ) -> tuple[T, CausalToken | None]:
        require(DeadlineStage.START)  # an expired deadline costs no checkout and no round trip
        with self._telemetry.unit(self.intent) as span:
            async with self._uow_factory(intent=self.intent, priority=self._priority, options=options) as uow:
                if span.is_recording():
                    span.set_attribute("db.client.connection.pool.name", uow.target)
                    if uow.read_route is not None:
                        span.set_attribute("alchemy_hex.read_route", uow.read_route.value)
                result = await body(uow)
                if self.intent is Intent.WRITE:
                    await uow.commit()
                return result, uow.causal_token
