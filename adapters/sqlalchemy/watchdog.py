"""``DeadlineWatchdog``: the client-side deadline on every request, at no cost per request.

``statement_timeout`` runs on the server, so it cannot end a request whose answer never comes back
(a black-holed network, a frozen server). asyncpg's ``command_timeout`` bounds every request from
the client instead, but arms and cancels an event-loop timer for each round trip (BEGIN, the
statement, COMMIT or ROLLBACK: three or four per unit of work), which costs more CPU than the rest
of the provider together. The watchdog does the same job from the outside: a few times per
deadline it looks at which tasks are waiting for an answer on one of the provider's connections,
and a wait on the same request that has lasted past the deadline ends as if the network had dropped
the connection: the waiting caller gets asyncpg's "connection was closed in the middle of
operation" and the connection is aborted, so SQLAlchemy invalidates it and the provider's usual
translation applies (``DatabaseUnavailableError``, ``CommitOutcomeUnknownError`` during COMMIT). A
connection that is checked out but not waiting for anything is never touched, however long it is
held (leak detection and reclaim are for that).

It reads CPython asyncio internals that have been stable since Python 3.4 (``Task._fut_waiter``,
the future a task is suspended on, and ``Future._callbacks``) and recognises asyncpg's wait by the
protocol's own done callback on it. :func:`supported` says whether those are there; without them
the provider falls back to asyncpg's per-request timer.

Two more uses of the same look: with ``stuck_after_s`` set, requests that have waited longer are
reported once per target to ``on_stuck`` (the circuit breaker counts them while they still run,
so a frozen server opens the circuit after about that long), and :func:`cut_request` ends the
request pending on one connection at once (a unit of work's backstop at its caller's deadline).
"""

from __future__ import annotations

import asyncio
import importlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)
# Imported by name: asyncpg ships no type information, and the Alembic scripts are type-checked
# with no per-package settings.
_asyncpg_errors: Any = importlib.import_module("asyncpg.exceptions")

#: How many looks per deadline: a dead request is ended between 1 and 1.25 deadlines after it began.
CHECKS_PER_DEADLINE = 8


def supported() -> bool:
    """Whether this interpreter's asyncio exposes what the watchdog reads."""
    return hasattr(asyncio.Task, "_fut_waiter") and hasattr(asyncio.Future, "_callbacks")


class DeadlineWatchdog:
    """Ends requests that have waited longer than ``deadline_s`` for the server's answer.

    ``connections`` lists, when called, ``(target, asyncpg connection)`` for every open connection
    of the provider, checked out or not. One event loop: :meth:`run` in a background task, or
    :meth:`check` called directly (tests).
    """

    def __init__(
        self,
        *,
        deadline_s: float,
        connections: Callable[[], Iterable[tuple[str, Any]]],
        clock: Callable[[], float],
        on_close: Callable[[str], None] | None = None,
        stuck_after_s: float | None = None,
        on_stuck: Callable[[str, int], None] | None = None,
    ) -> None:
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s!r}")
        if stuck_after_s is not None and not stuck_after_s > 0:
            raise ValueError(f"stuck_after_s must be > 0, got {stuck_after_s!r}")
        self.deadline_s = deadline_s
        self.stuck_after_s = stuck_after_s if on_stuck is not None else None
        self._connections = connections
        self._clock = clock
        self._on_close = on_close
        self._on_stuck = on_stuck
        # Per protocol: the request's waiter seen at the last look, when it was first seen, and
        # whether it was reported stuck.
        self._waits: dict[int, tuple[asyncio.Future[Any], float, bool]] = {}

    @property
    def period_s(self) -> float:
        shortest = min(self.deadline_s, self.stuck_after_s or math.inf)
        return max(shortest / CHECKS_PER_DEADLINE, 0.005)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            self.check()

    def check(self) -> int:
        """Close every connection whose pending request has waited past the deadline; returns how many."""
        owned = {id(connection._protocol): (target, connection) for target, connection in self._connections()}
        if not owned:
            self._waits = {}
            return 0
        now, closed, waits = self._clock(), 0, {}
        stuck: dict[str, int] = {}
        for waiter, protocol in _pending_requests():
            entry = owned.get(id(protocol))
            if entry is None or entry[1]._protocol is not protocol:
                continue
            seen = self._waits.get(id(protocol))
            since, reported = (seen[1], seen[2]) if seen is not None and seen[0] is waiter else (now, False)
            if now - since >= self.deadline_s:
                self._close(entry[0], entry[1], waiter, now - since)
                closed += 1
                continue
            if not reported and self.stuck_after_s is not None and now - since >= self.stuck_after_s:
                reported = True
                stuck[entry[0]] = stuck.get(entry[0], 0) + 1
            waits[id(protocol)] = (waiter, since, reported)
        self._waits = waits
        if self._on_stuck is not None:
            for target, count in stuck.items():
                log.warning("connection.stuck", target=target, requests=count, after_s=self.stuck_after_s)
                self._on_stuck(target, count)
        return closed

    def _close(self, target: str, connection: Any, waiter: asyncio.Future[Any], waited_s: float) -> None:
        _cut(
            connection,
            waiter,
            f"no answer from {target!r} for {waited_s:.2f}s (client deadline {self.deadline_s:g}s)",
        )
        if self._on_close is not None:
            self._on_close(target)
        log.warning(
            "connection.unresponsive",
            target=target,
            waited_s=round(waited_s, 3),
            deadline_s=self.deadline_s,
        )


def _pending_requests() -> Iterable[tuple[asyncio.Future[Any], Any]]:
    """``(waiter, protocol)`` for every task waiting on an answer of some asyncpg connection."""
    for task in asyncio.all_tasks():
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            continue
        for callback, _context in getattr(waiter, "_callbacks", None) or ():
            # The task's own wake-up is a bound method too: callers match the protocols they own.
            protocol = getattr(callback, "__self__", None)
            if protocol is not None:
                yield waiter, protocol


def _cut(connection: Any, waiter: asyncio.Future[Any], reason: str) -> None:
    # What asyncpg's own timeout does, except that a cancel request would vanish down the same
    # black hole: fail the wait, then abort the connection (no network round trip).
    waiter.set_exception(
        _asyncpg_errors.ConnectionDoesNotExistError(
            f"connection was closed in the middle of operation: {reason}"
        )
    )
    connection.terminate()


def cut_request(connection: Any, reason: str) -> bool:
    """End the request pending on the asyncpg ``connection``, as the watchdog would; whether there was one.

    The waiting caller gets asyncpg's "connection was closed in the middle of operation" and the
    connection is aborted, so SQLAlchemy discards it: never back in the pool mid-request. With no
    request pending, nothing is touched. Looks at every task once: for rare use (a deadline's backstop).
    """
    protocol = getattr(connection, "_protocol", None)
    for waiter, waiting_on in _pending_requests():
        if waiting_on is protocol:
            _cut(connection, waiter, reason)
            return True
    return False
