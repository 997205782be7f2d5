"""``CheckoutRegistry``: who holds which connection since when, and suspected leaks."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Checkout:
    """One checked-out connection: where, since when, by which task and request.

    The task and its context are kept as they are and their name and correlation ID read only when
    a report needs them: every unit of work opens a checkout, few are ever reported.
    """

    token: int
    target: str
    started_at: float
    task: asyncio.Task[Any] | None
    context: contextvars.Context
    stack: str | None = None
    reported_leak: bool = False
    connection: Any = None
    reclaimed: bool = False

    @property
    def task_name(self) -> str | None:
        return None if self.task is None else self.task.get_name()

    @property
    def correlation_id(self) -> str | None:
        """The ``correlation_id`` bound in structlog's context when the connection was checked out."""
        value = self.context.run(structlog.contextvars.get_contextvars).get("correlation_id")
        return value if isinstance(value, str) else None


class CheckoutRegistry:
    """Every live checkout, removed again on release, so it never grows beyond what is held.

    With ``leak_detection_threshold_s`` set, a checkout held longer is logged once
    (``connection.leak_suspected``, with the stack that took it when stacks are captured) and,
    if it comes back later, ``connection.leak_returned`` says so.
    """

    def __init__(
        self, *, clock: Callable[[], float], leak_detection_threshold_s: float | None = None
    ) -> None:
        self._clock = clock
        self._threshold_s = leak_detection_threshold_s
        self._live: dict[int, Checkout] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._live)

    def open(self, target: str) -> Checkout:
        # Capturing a stack costs tens of microseconds: only when leak detection is on.
        stack = "".join(traceback.format_stack(limit=12)[:-2]) if self._threshold_s is not None else None
        checkout = Checkout(
            next(self._tokens),
            target,
            self._clock(),
            asyncio.current_task(),
            contextvars.copy_context(),  # O(1): contexts are immutable mappings
            stack,
        )
        self._live[checkout.token] = checkout
        return checkout

    def close(self, checkout: Checkout) -> float:
        """Forget ``checkout``; returns how long it was held."""
        self._live.pop(checkout.token, None)
        held = self._clock() - checkout.started_at
        if checkout.reported_leak:
            log.warning(
                "connection.leak_returned", target=checkout.target, task=checkout.task_name, held_s=held
            )
        return held

    def report_leaks(self) -> int:
        """Log every checkout past the threshold not reported yet; returns how many were new."""
        if self._threshold_s is None:
            return 0
        now, fresh = self._clock(), 0
        for checkout in list(self._live.values()):
            if not checkout.reported_leak and now - checkout.started_at > self._threshold_s:
                checkout.reported_leak = True
                fresh += 1
                log.warning(
                    "connection.leak_suspected",
                    target=checkout.target,
                    task=checkout.task_name,
                    correlation_id=checkout.correlation_id,
                    held_s=round(now - checkout.started_at, 3),
                    stack=checkout.stack,
                )
        return fresh

    def overdue(self, limit_s: float) -> list[Checkout]:
        """Live checkouts held longer than ``limit_s`` and not reclaimed yet."""
        now = self._clock()
        return [c for c in self._live.values() if not c.reclaimed and now - c.started_at > limit_s]
