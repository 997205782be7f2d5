"""The client side of a scenario: workers calling the use cases, every call timed and recorded."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ports.connection_provider import Priority
from tests.chaos.harness import Service
from tests.chaos.ledger import AckLedger, Request, is_clean

#: How long a client backs off after a failed call: a real client does, and it keeps a loop that
#: fails in microseconds (an open circuit) from spinning the CPU the server needs to come back.
FAILURE_PAUSE_S: Final = 0.01


@dataclass(frozen=True, slots=True)
class Call:
    """One call as the client saw it: when it started and ended, and how (``error`` is a type name)."""

    kind: str
    started: float
    ended: float
    error: str | None
    clean: bool = True

    @property
    def duration_s(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Load:
    """Concurrent workers running transfers (and reads, ``read_share`` of calls) until stopped."""

    service: Service
    ledger: AckLedger
    workers: int
    read_share: float = 0.0
    priority: Priority | None = None
    seed: int = 7
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    unclean: list[str] = field(default_factory=list)
    #: The first message of each error type, for the report.
    messages: dict[str, str] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(i), name=f"chaos-worker-{i}") for i in range(self.workers)
        ]

    async def stop(self, timeout_s: float = 30.0) -> int:
        """Let each worker finish the call it is in; returns how many were still stuck after ``timeout_s``.

        Stuck workers are cancelled, so that a hung call fails the scenario instead of hanging it.
        """
        return await stop_workers(self._stop, self._tasks, timeout_s)

    async def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        container = self.service.container
        priority = {} if self.priority is None else {"priority": self.priority}
        transfer, read = container.transfer(**priority), container.get_balance(**priority)
        while not self._stop.is_set():
            if rng.random() < self.read_share:
                await self.timed("read", read(rng.choice(self.service.accounts)))
                continue
            source, destination = rng.sample(self.service.accounts, 2)
            amount = rng.randint(1, 100)
            request = Request(f"chaos-{uuid.uuid4().hex}", str(source), str(destination), amount)
            call = transfer(source, destination, amount, idempotency_key=request.key)
            await self.timed("transfer", call, request)

    async def timed(self, kind: str, call: Any, request: Request | None = None) -> bool:
        """Await ``call``, recording it (and the transfer ``request`` in the ledger); whether it succeeded."""
        started = time.monotonic()
        self.in_flight += 1
        try:
            await call
        except asyncio.CancelledError:
            if request is not None:
                self.ledger.cancelled(request)
            raise
        except Exception as error:
            clean = is_clean(error)
            self.messages.setdefault(type(error).__name__, str(error)[:200])
            if not clean:
                self.unclean.append(f"{kind}: {type(error).__name__}: {error}")
            if request is not None:
                self.ledger.failed(request, error)
            self.calls.append(Call(kind, started, time.monotonic(), type(error).__name__, clean))
            await asyncio.sleep(FAILURE_PAUSE_S)
            return False
        finally:
            self.in_flight -= 1
        if request is not None:
            self.ledger.acknowledged(request)
        self.calls.append(Call(kind, started, time.monotonic(), None))
        return True

    def ok_count(self) -> int:
        return sum(1 for c in self.calls if c.ok)

    def failed_clean_count(self) -> int:
        return sum(1 for c in self.calls if not c.ok and c.clean)

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the end of the first successful call that ended after it."""
        ends = [c.ended for c in self.calls if c.ok and c.ended >= moment]
        return min(ends) - moment if ends else None

    async def recovery_after(self, moment: float, *, timeout_s: float) -> float | None:
        """Wait up to ``timeout_s`` for a call to succeed after ``moment``; the seconds it took, or None."""
        await wait_until(lambda: self.first_success_after(moment) is not None, timeout_s=timeout_s)
        return self.first_success_after(moment)

    def errors(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.calls:
            if c.error is not None:
                counts[c.error] = counts.get(c.error, 0) + 1
        return counts


async def wait_until(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


async def stop_workers(stop: asyncio.Event, tasks: list[asyncio.Task[None]], timeout_s: float) -> int:
    """Set ``stop``, let each task finish its call, cancel those still running after ``timeout_s``.

    Returns how many had to be cancelled (a hung call then fails its test instead of hanging it).
    """
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(pending)
