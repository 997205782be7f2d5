"""``RecoveryProber``: while a target's circuit is open, find out as soon as the server answers again.

A circuit breaker left alone waits its whole recovery time before it lets a trial through, so a
database that was down for a tenth of a second stays unusable for seconds. The prober watches the
circuits of the provider's targets and, while one is open, connects to that target with a fresh
connection outside its pool and runs ``SELECT 1``: at most one probe per target at a time, the
first ``interval_s`` after the circuit opened, then with the interval doubling after every failed
probe up to ``max_interval_s`` (never beyond the breaker's recovery time, past which the breaker
half-opens by itself). The first probe that succeeds makes the provider discard the target's idle
pooled connections (a restart leaves them all dead, so the trial must get a fresh one) and
half-opens the circuit (:meth:`CircuitBreaker.recovered`); the trial call then decides, as after
the recovery time. Probes never take a pool slot or a place in the admission queue: they come
after every request, and a slow one holds nothing but its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from ports.circuit_breaker import BreakerState, CircuitBreaker

__all__ = ["RecoveryProber"]
log = structlog.get_logger(__name__)

_TRIVIAL_QUERY: Final = "SELECT 1"


@dataclass(slots=True)
class _Probe:
    """What the prober keeps about one target while its circuit is open."""

    connect: Callable[[], Awaitable[Any]]
    next_at: float | None = None  # None: the circuit is not open
    failures: int = 0
    task: asyncio.Task[bool] | None = None
    attempts: int = 0
    successes: int = 0


class RecoveryProber:
    """Probes each target whose circuit is open; the first success half-opens that circuit.

    ``connectors`` gives, per target name, a callable opening a fresh asyncpg connection with its
    own timeout (``SqlAlchemyConnectionProvider.probe_connector``); ``on_recovered(target)`` is
    called before the breaker hears of the success (the provider's ``discard_idle``). The circuits
    are looked at every ``interval_s``; ``attempts(target)`` counts the probes made; a probe's query
    waits ``timeout_s`` at most. One event
    loop: :meth:`start` in a running loop, :meth:`aclose` to stop.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker,
        connectors: Mapping[str, Callable[[], Awaitable[Any]]],
        on_recovered: Callable[[str], object] = lambda _target: None,
        interval_s: float = 0.05,
        max_interval_s: float = 0.25,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < interval_s <= max_interval_s:
            raise ValueError(
                f"need 0 < interval_s <= max_interval_s, got {interval_s!r} and {max_interval_s!r}"
            )
        self._breaker = breaker
        self._probes = {name: _Probe(connect) for name, connect in connectors.items()}
        self._on_recovered = on_recovered
        self._interval_s = interval_s
        self._max_interval_s = max_interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def attempts(self, target: str) -> int:
        """How many probes of ``target`` were started."""
        return self._probes[target].attempts

    def successes(self, target: str) -> int:
        """How many probes of ``target`` reached the server and half-opened its circuit."""
        return self._probes[target].successes

    def start(self) -> None:
        """Start watching in the running loop (idempotent)."""
        if self._task is None:
            # A fresh context: no request's correlation id on the prober's lines.
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="alchemy-hex-recovery-prober", context=contextvars.Context()
            )

    async def aclose(self) -> None:
        """Stop watching; let the probes in flight end (each within its timeout), then return."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Not cancelled: asyncpg leaves an unretrieved error behind a connect cancelled half-way.
        probes = {p.task for p in self._probes.values() if p.task is not None}
        if probes:
            _, pending = await asyncio.wait(probes, timeout=self._timeout_s * 2 + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self._interval_s)

    def tick(self) -> None:
        """Start the probes that are due; called every ``interval_s`` by :meth:`run`."""
        now = self._clock()
        for target, probe in self._probes.items():
            if probe.task is not None:
                continue  # one probe per target at a time, however long it takes
            if self._breaker.state(target) is not BreakerState.OPEN:
                probe.next_at, probe.failures = None, 0
                continue
            if probe.next_at is None:
                probe.next_at = now + self._interval_s  # the circuit has just opened
            if now >= probe.next_at:
                probe.attempts += 1
                probe.task = asyncio.get_running_loop().create_task(
                    self._probe(target, probe), name=f"alchemy-hex-probe-{target}"
                )

    async def _probe(self, target: str, probe: _Probe) -> bool:
        try:
            reached = await _answers(probe.connect, self._timeout_s)
        finally:
            probe.task = None
        now = self._clock()
        if not reached:
            probe.failures += 1
            backoff = min(self._interval_s * 2**probe.failures, self._max_interval_s)
            probe.next_at = now + backoff
            return False
        probe.successes += 1
        probe.next_at, probe.failures = None, 0
        self._on_recovered(target)
        self._breaker.recovered(target)
        log.info("circuit.probe_succeeded", target=target, attempts=probe.attempts)
        return True


async def _answers(connect: Callable[[], Awaitable[Any]], timeout_s: float) -> bool:
    """Whether a fresh connection could be opened (within its own timeout) and answered a trivial query."""
    try:
        connection = await connect()
    except Exception:  # refused, timed out, reset, shutting down: all say "not yet"
        return False
    try:
        await connection.fetchval(_TRIVIAL_QUERY, timeout=timeout_s)  # a frozen server never answers
    except Exception:
        return False
    finally:
        connection.terminate()  # fresh and idle: the server ends the session quietly
    return True
