"""Scenarios that press on the pool from the client side: slow holders and cancellation storms."""

from __future__ import annotations

import asyncio
import gc
import random
import time
import uuid
from collections import Counter
from typing import Any, Final

import anyio

from ports.connection_provider import WRITER, Intent, Priority
from ports.errors import CircuitOpenError, HexError
from settings import Settings
from tests.chaos.harness import (
    ChaosLab,
    Scale,
    ScenarioReport,
    Service,
    admin_dsn_of,
    capacity_of,
    leaked_after_shutdown,
    leaked_while_running,
    report,
    running_service,
    settings_for,
)
from tests.chaos.ledger import AckLedger, Request
from tests.chaos.load import Load

#: Scheduling slack on a loaded 2-core machine.
SLACK_S: Final = 0.5
#: After the load, a fresh transfer must get through at once: anything slower smells of a deadlock.
AFTER_LOAD_BOUND_S: Final = 2.0


def refusal_bound_s(settings: Settings) -> float:
    """How long a request may wait before it is refused: each attempt waits at most the acquire timeout."""
    retry, database = settings.retry, settings.database
    waits = min(
        retry.max_attempts * database.acquire_timeout_s, retry.max_total_s + database.acquire_timeout_s
    )
    return waits + SLACK_S


async def _hold(
    service: Service, stop: asyncio.Event, hold_s: float, offset_s: float, errors: Counter[str]
) -> None:
    """A slow holder: takes a connection (HIGH priority) and sits on it for ``hold_s``, again and again."""
    await asyncio.sleep(offset_s)
    while not stop.is_set():
        try:
            async with service.container.unit_of_work(intent=Intent.WRITE, priority=Priority.HIGH):
                await asyncio.sleep(hold_s)
        except HexError as error:
            errors[type(error).__name__] += 1
            await asyncio.sleep(0.01)


async def _transfer_promptly(service: Service) -> str | None:
    """One transfer after the load; ``None`` when it went through in time, else what went wrong.

    A circuit the load left open is waited out as its ``retry_after_s`` says, as a client would:
    what must not happen is a wait with no end.
    """
    source, destination = service.accounts[:2]
    key = f"after-{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(AFTER_LOAD_BOUND_S + service.settings.circuit_breaker.recovery_time_s):
            for _ in range(100):
                try:
                    await service.container.transfer()(source, destination, 1, idempotency_key=key)
                    return None
                except CircuitOpenError as refused:
                    await asyncio.sleep(refused.retry_after_s)
    except TimeoutError:
        return f"a transfer after the load did not finish within {AFTER_LOAD_BOUND_S}s (deadlock?)"
    except Exception as error:
        return f"a transfer after the load failed: {type(error).__name__}: {error}"
    return "a transfer after the load kept being refused by an open circuit"


def _pool_left_clean(service: Service) -> list[str]:
    provider = service.container.connection_provider()
    writer = provider.stats().targets[0]
    problems = []
    if provider.checked_out:
        problems.append(f"{provider.checked_out} checkouts still registered after the load")
    if writer.in_use or writer.waiting:
        problems.append(f"writer pool left with in_use={writer.in_use} waiting={writer.waiting}")
    return problems


async def pool_exhaustion(lab: ChaosLab, scale: Scale, *, breaker: str = "in_memory") -> ScenarioReport:
    """5. Slow holders keep every connection busy while a flood of NORMAL requests and a trickle of
    CRITICAL ones arrive.

    Waiting requests get ``PoolTimeoutError`` or ``PoolQueueFullError`` within their acquire
    timeouts; CRITICAL requests still get through (they are served first); nothing deadlocks.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    scenario = "pool-exhaustion" if breaker == "in_memory" else "pool-exhaustion-no-breaker"
    app = f"chaos-{scenario}"
    pool: dict[str, object] = {"pool_size": 3, "max_overflow": 0, "max_waiting": 6, "acquire_timeout_s": 0.5}
    settings = settings_for(dsn, app=app, database=pool, circuit_breaker={"implementation": breaker})
    bound = refusal_bound_s(settings)
    notes: list[str] = []
    holder_errors: Counter[str] = Counter()
    async with running_service(settings) as service:
        ledger = AckLedger()
        flood = Load(service, ledger, workers=12, seed=5)
        critical = Load(service, ledger, workers=2, priority=Priority.CRITICAL, seed=9)
        # Each holder keeps its connection for less than the acquire timeout, so a CRITICAL request,
        # first in line, always finds one freed within it, however slow the machine runs.
        stop, hold_s = asyncio.Event(), 0.3
        holders = [
            asyncio.create_task(_hold(service, stop, hold_s, hold_s * i / 3, holder_errors)) for i in range(3)
        ]
        await asyncio.sleep(0.2)
        flood.start()
        critical.start()
        await asyncio.sleep(scale.pick(2.5, 8.0))
        await critical.stop()
        await flood.stop()
        stop.set()
        await asyncio.gather(*holders)
        problems = _pool_left_clean(service)
        gate = service.container.connection_provider().stats().targets[0]
        late = await _transfer_promptly(service)
        leaked, _ = await leaked_while_running(admin_dsn_of(dsn), app, capacity_of(settings))
        total_before = service.total_before
    leaked += await leaked_after_shutdown(admin_dsn_of(dsn), app)
    verdict = await ledger.verify(dsn, total_before=total_before)

    refused = [c for c in flood.calls if not c.ok]
    slowest = max((c.duration_s for c in refused), default=0.0)
    critical_failed = [c for c in critical.calls if not c.ok]
    notes += [
        f"flood: {flood.ok_count()} ok, refused {flood.errors()}",
        f"slowest refusal {slowest:.2f}s (bound {bound:.2f}s)",
        f"critical: {critical.ok_count()} ok, {len(critical_failed)} failed {critical.errors()}",
    ]
    if holder_errors:
        notes.append(f"holders refused {dict(holder_errors)}")
    # Counted at the gate: a retry may end on another error (an open circuit) than the one it retried.
    notes.append(f"the gate timed out {gate.timed_out} and rejected {gate.rejected} requests (queue full)")
    if not gate.timed_out + gate.rejected:
        problems.append("the pool was never exhausted: no request got a pool-timeout or queue-full error")
    if slowest > bound:
        problems.append(f"a refused request waited {slowest:.2f}s, beyond its bound of {bound:.2f}s")
    if critical_failed or not critical.calls:
        problems.append(
            f"{len(critical_failed)} of {len(critical.calls)} CRITICAL requests failed: {critical.errors()}"
        )
    if late is not None:
        problems.append(late)
    return report(
        scenario,
        loads=[flood, critical],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=None,
        notes=notes,
        problems=problems,
    )


async def _asyncio_storm(service: Service, load: Load, rng: random.Random, size: int) -> None:
    """``size`` transfers as plain tasks, most cancelled at a random moment in their first 40 ms."""
    transfer = service.container.transfer()
    loop = asyncio.get_running_loop()
    tasks = []
    for _ in range(size):
        source, destination = rng.sample(service.accounts, 2)
        request = Request(f"storm-{uuid.uuid4().hex}", str(source), str(destination), 1)
        task = asyncio.create_task(
            load.timed("transfer", transfer(source, destination, 1, idempotency_key=request.key), request)
        )
        if rng.random() < 0.7:
            loop.call_later(rng.random() * 0.04, task.cancel)
        tasks.append(task)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _anyio_storm(service: Service, load: Load, rng: random.Random, size: int) -> None:
    """``size`` transfers in an anyio task group whose scope is cancelled at a random moment."""
    transfer = service.container.transfer()

    async def one() -> None:
        source, destination = rng.sample(service.accounts, 2)
        request = Request(f"storm-{uuid.uuid4().hex}", str(source), str(destination), 1)
        await load.timed("transfer", transfer(source, destination, 1, idempotency_key=request.key), request)

    async with anyio.create_task_group() as group:
        for _ in range(size):
            group.start_soon(one)
        await anyio.sleep(rng.random() * 0.04)
        group.cancel_scope.cancel()


class _EscapedErrors:
    """Errors that reach the event loop's exception handler: a task or future nobody awaited.

    Whatever a cancelled unit of work leaves behind (work still running, a driver's future) must
    end observed; when it does not, its failure surfaces here ("Task exception was never
    retrieved", "Future exception was never retrieved") rather than to any caller.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        first_line = str(error).split("\n", 1)[0][:120]
        what = f"{type(error).__name__}: {first_line}" if error is not None else ""
        self.seen.append(f"{context.get('message')} {what}".strip())

    async def settle(self) -> int:
        """Collect the orphans of the phase that just ended; how many errors escaped so far."""
        await asyncio.sleep(0.1)
        gc.collect()  # "never retrieved" is reported when the orphan is garbage collected
        await asyncio.sleep(0)
        return len(self.seen)


async def cancellation_storm(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """6. Rounds of transfers cancelled at random points, as asyncio tasks, then in anyio task groups.

    Afterwards no checkout is registered, the pool is idle, no session is idle in a transaction,
    no backend exceeds the pool, a transfer goes through at once, and no error of a cancelled unit
    of work escaped to the event loop.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = "chaos-cancel"
    settings = settings_for(dsn, app=app, database={"pool_size": 4, "max_overflow": 2})
    ledger, rng = AckLedger(), random.Random(13)
    rounds = scale.count(6, 20)
    started = time.monotonic()
    escaped = _EscapedErrors()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(escaped)
    async with running_service(settings) as service:
        load = Load(service, ledger, workers=0)
        stats = service.container.connection_provider().stats
        for _ in range(rounds):
            await _asyncio_storm(service, load, rng, 100)
        after_asyncio, invalidated_asyncio = await escaped.settle(), stats().targets[0].lost
        for _ in range(rounds):
            await _anyio_storm(service, load, rng, 50)
        await asyncio.sleep(0.1)
        problems = _pool_left_clean(service)
        late = await _transfer_promptly(service)
        writer = stats().targets[0]
        connects_left = service.container.connection_provider()._target(WRITER).connects.detached
        leaked, seen = await leaked_while_running(admin_dsn_of(dsn), app, capacity_of(settings))
        total_before = service.total_before
    leaked += await leaked_after_shutdown(admin_dsn_of(dsn), app)
    verdict = await ledger.verify(dsn, total_before=total_before)
    after_anyio = await escaped.settle() - after_asyncio
    loop.set_exception_handler(None)

    cancelled = ledger.errors["CancelledError"]
    notes = [
        f"{rounds} rounds of 100 asyncio tasks, then of 50 anyio tasks, in {time.monotonic() - started:.1f}s",
        f"{cancelled} cancelled, {load.ok_count()} completed",
        f"{seen.total} backends after (capacity {capacity_of(settings)})",
        f"pool opened {writer.opened} connections; invalidated {invalidated_asyncio} in the asyncio rounds, "
        f"{writer.lost - invalidated_asyncio} in the anyio rounds",
        f"{connects_left} connects left to finish by cancelled requests",
        f"{len(escaped.seen)} errors escaped to the event loop",
    ]
    if late is not None:
        problems.append(late)
    if escaped.seen:
        problems.append(
            f"errors escaped to the event loop: {after_asyncio} in the asyncio rounds, {after_anyio} in the "
            f"anyio rounds ({'; '.join(sorted(set(escaped.seen))[:3])})"
        )
    return report(
        "cancellation-storm",
        loads=[load],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=None,
        notes=notes,
        problems=problems,
        extra_failed_clean=cancelled,
    )
