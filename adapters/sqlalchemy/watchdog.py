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
"""

from __future__ import annotations

import asyncio
import importlib
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
    ) -> None:
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s!r}")
        self.deadline_s = deadline_s
        self._connections = connections
        self._clock = clock
        self._on_close = on_close
        # Per protocol: the request's waiter seen at the last look, and when it was first seen.
        self._waits: dict[int, tuple[asyncio.Future[Any], float]] = {}

    @property
    def period_s(self) -> float:
        return max(self.deadline_s / CHECKS_PER_DEADLINE, 0.005)

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
        for task in asyncio.all_tasks():
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                continue
            for callback, _context in getattr(waiter, "_callbacks", None) or ():
                protocol = getattr(callback, "__self__", None)
                entry = owned.get(id(protocol))
                if entry is None or entry[1]._protocol is not protocol:
                    continue
                seen = self._waits.get(id(protocol))
                since = seen[1] if seen is not None and seen[0] is waiter else now
                if now - since >= self.deadline_s:
                    self._close(entry[0], entry[1], waiter, now - since)
                    closed += 1
                else:
                    waits[id(protocol)] = (waiter, since)
                break
        self._waits = waits
        return closed

    def _close(self, target: str, connection: Any, waiter: asyncio.Future[Any], waited_s: float) -> None:
        # What asyncpg's own timeout does, except that a cancel request would vanish down the same
        # black hole: fail the wait, then abort the connection (no network round trip).
        waiter.set_exception(
            _asyncpg_errors.ConnectionDoesNotExistError(
                f"connection was closed in the middle of operation: no answer from {target!r} "
                f"for {waited_s:.2f}s (client deadline {self.deadline_s:g}s)"
            )
        )
        connection.terminate()
        if self._on_close is not None:
            self._on_close(target)
        log.warning(
            "connection.unresponsive",
            target=target,
            waited_s=round(waited_s, 3),
            deadline_s=self.deadline_s,
        )
