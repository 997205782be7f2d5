"""Growing the pool on demand, one connection at a time, in the background (HikariCP's way).

SQLAlchemy's queue pool opens an overflow connection in every request that finds no idle one: 45
requests arriving together on a pool of 5 open 45 connections, each waiting out its own connect,
although the 5 busy connections would have served them all long before. Here the admission gate
in front of the pool (FIFO per priority) is the only queue, and its ceiling is the number of
connections the pool holds: a request is admitted only when a connection is there for it, so a
connection coming back is handed to the oldest waiter, and requests never connect. New
connections are opened by :class:`PoolGrower`, at most ``max_concurrent_connects`` at a time,
each only after re-checking that a waiter is left that neither the connections coming back nor
the connects already under way will serve (HikariCP's ``shouldContinueCreating``, psycopg_pool's
``_maybe_grow_pool``), or that the pool holds fewer than ``min_idle`` (those are opened together,
up to ``MAX_FILL_CONNECTS`` at once, as HikariCP fills its minimum). A connect that finishes
after the demand vanished keeps its connection (up to the maximum; the idle timeout trims it
later). A failed connect backs off (10 ms, doubling, at most ``backoff_max_s``); while the pool
holds no connection at all, the waiters get the connect's error at once rather than wait for a
connection that cannot come, so the circuit breaker learns of the outage as before.

What still connects inside a request: a connection that the pool already holds but that was lost
(invalidated), found dead, or past its lifetime is replaced in place by the request that draws
it, as SQLAlchemy does. That replaces a connection; it never adds one.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import time
from collections.abc import Callable
from typing import Any, Final

import structlog
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util import queue as sqla_queue

from adapters.asyncio.admission_gate import AdmissionGate

__all__ = ["GrowablePool", "PoolGrower"]
log = structlog.get_logger(__name__)

#: HikariCP's connect backoff: 10 ms, doubled after each failure in a row.
BACKOFF_INITIAL_S: Final = 0.01
#: The most connects under way at once while the pool holds fewer than ``min_idle``.
MAX_FILL_CONNECTS: Final = 8


class GrowablePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool, sized at the maximum, with two doors for the grower.

    Built with ``pool_size`` = the maximum and ``max_overflow=0``, so that every connection that
    comes back is kept (none is an "overflow" closed on return). :meth:`open_connection` adds one
    connection to the idle queue without checking anything out, and :meth:`retire_idle` closes
    the longest-idle ones for good. Both run in SQLAlchemy's greenlet (``greenlet_spawn``) and use
    the queue pool's own bookkeeping (its overflow counter and its queue), so ``checkedin()``,
    ``checkedout()``, disposal and ``recreate()`` keep working unchanged.
    """

    def open_connection(self) -> bool:
        """Connect and add the connection to the idle queue; ``False`` when the pool is full."""
        if not self._inc_overflow():
            return False
        try:
            record = self._create_connection()
        except BaseException:
            self._dec_overflow()
            raise
        self._do_return_conn(record)
        return True

    def retire_idle(self, count: int) -> int:
        """Close up to ``count`` idle connections, longest idle first; returns how many."""
        taken = []
        # All taken before the first close awaits anything, so that no request can draw one.
        for _ in range(count):
            try:
                taken.append(self._pool.get(False))
            except sqla_queue.Empty:
                break
        # Out of the pool's count first: a close interrupted half-way must not leave a phantom.
        for _ in taken:
            self._dec_overflow()
        for record in taken:
            record.close()  # the pool logs a failed close; only a cancellation gets through
        return len(taken)


class PoolGrower:
    """Opens connections for one target in the background: see the module docstring.

    ``pool`` gives the target's current :class:`GrowablePool` (disposal replaces it); ``gate`` is
    the target's admission gate, whose ceiling this grower owns; ``on_failure`` turns a failed
    connect into the error waiters get (and counts it). One event loop; :meth:`nudge` is cheap
    and safe to call from anywhere in it (the gate calls it when a request queues).
    """

    def __init__(
        self,
        *,
        name: str,
        pool: Callable[[], Any],
        gate: AdmissionGate,
        maximum: int,
        min_idle: int,
        max_concurrent_connects: int = 1,
        on_failure: Callable[[BaseException], BaseException],
        backoff_max_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < 1 or not 0 <= min_idle <= maximum or max_concurrent_connects < 1:
            raise ValueError(
                f"pool {name!r} needs maximum >= 1, 0 <= min_idle <= maximum and "
                f"max_concurrent_connects >= 1, got {maximum}, {min_idle}, {max_concurrent_connects}"
            )
        self.name = name
        self._pool = pool
        self._gate = gate
        self._maximum = maximum
        self._min_idle = min_idle
        self._max_connects = max_concurrent_connects
        self._on_failure = on_failure
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._retry_timer: asyncio.TimerHandle | None = None
        self._last_error: BaseException | None = None
        self._closed = False
        #: Connects under way now, and the most ever under way at once.
        self.connecting = 0
        self.connecting_peak = 0
        #: Connections this grower opened, connects that failed, connections it retired.
        self.opened = 0
        self.failed = 0
        self.retired = 0
        gate.set_ceiling(0)

    @property
    def size(self) -> int:
        """Connections the pool holds (idle or checked out), as the gate admits against."""
        return self._gate.ceiling

    def _wanted(self) -> bool:
        gate, committed = self._gate, self._gate.ceiling + self.connecting
        if committed >= self._maximum:
            return False
        if committed < self._min_idle:
            return True
        # A waiter that neither a returning connection nor a connect under way will serve; and a
        # connection would let one more in (an adaptive limit below the ceiling is what holds them).
        return gate.unserved > self.connecting and gate.capacity >= gate.ceiling

    def _connect_slots(self) -> int:
        # Up to ``min_idle`` the connections are wanted whatever the demand, so they are opened
        # together (HikariCP fills its minimum with several threads too); beyond it, one demand-
        # checked connect after the other, at most ``max_concurrent_connects`` at a time.
        below_min = self._min_idle - self._gate.ceiling
        return max(self._max_connects, min(below_min, MAX_FILL_CONNECTS))

    def nudge(self) -> None:
        """Start connects while they are wanted and allowed; fail waiters an empty pool cannot serve."""
        if self._closed:
            return
        if self._clock() < self._retry_at:
            if self._gate.ceiling == 0 and not self.connecting and self._last_error is not None:
                self._fail_waiters(self._last_error)
            return
        while self.connecting < self._connect_slots() and self._wanted():
            self.connecting += 1
            self.connecting_peak = max(self.connecting_peak, self.connecting)
            # A fresh context: the request whose arrival caused the connect lends it nothing.
            task = asyncio.get_running_loop().create_task(
                self._connect(), name=f"alchemy-hex-grow-{self.name}", context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        pool = self._pool()
        opened: bool | None
        try:
            opened = await greenlet_spawn(pool.open_connection)
            if pool is not self._pool():
                # Disposed while connecting (the engine replaced its pool): nothing else would ever
                # close what was just added to the discarded one.
                await greenlet_spawn(pool.dispose)
                opened = None
        except asyncio.CancelledError:
            self.connecting -= 1
            raise
        except Exception as error:
            self.connecting -= 1
            self._failed(error)
        else:
            self.connecting -= 1
            self._backoff_s, self._retry_at, self._last_error = 0.0, 0.0, None
            if opened:
                self.opened += 1
                self._gate.set_ceiling(self._gate.ceiling + 1)  # the oldest waiter, if any, gets it
            elif opened is False:  # full already (disposed, then refilled by requests): say so
                self._gate.set_ceiling(self._maximum)
        self.nudge()

    def _failed(self, error: Exception) -> None:
        self.failed += 1
        self._last_error = self._on_failure(error)
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_INITIAL_S), self._backoff_max_s)
        self._retry_at = self._clock() + self._backoff_s
        log.warning(
            "pool.connect_failed",
            target=self.name,
            error=str(self._last_error),
            retry_in_s=self._backoff_s,
            size=self._gate.ceiling,
            waiting=self._gate.waiting,
        )
        if self._gate.ceiling == 0:
            self._fail_waiters(self._last_error)
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._retry_timer = asyncio.get_running_loop().call_later(self._backoff_s, self.nudge)

    def _fail_waiters(self, error: BaseException) -> None:
        self._gate.fail_waiting(lambda: copy.copy(error))

    async def retire_idle(self, count: int) -> int:
        """Close up to ``count`` idle connections for good (the idle timeout), keeping ``min_idle``.

        Only connections no admitted request can be about to draw: the ceiling drops before the
        connections are taken from the pool, in one step of the event loop.
        """
        gate = self._gate
        count = min(count, gate.ceiling - gate.in_use, gate.ceiling - self._min_idle)
        if count <= 0 or gate.waiting:
            return 0
        gate.set_ceiling(gate.ceiling - count)
        retired: int = await greenlet_spawn(self._pool().retire_idle, count)
        if retired < count:  # fewer were idle in the pool than the gate said: give the rest back
            gate.set_ceiling(gate.ceiling + count - retired)
        self.retired += retired
        return retired

    async def aclose(self) -> None:
        """Start no more connects; cancel those under way (each finishes and is closed on its own)."""
        self._closed = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
