"""Finishing work that must not be abandoned half-way, whoever cancels the caller and how often."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_to_completion(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled, then re-raise the cancellation.

    ``asyncio.shield`` alone protects the work but lets the caller walk away from it, so a ROLLBACK
    or a pool checkin could still be running on a connection the caller has already released, and
    its error would surface as "exception was never retrieved". anyio cancels again at every await
    inside a cancelled scope, so one wait after the first cancellation is not enough either: wait
    until the work is done, however many cancellations arrive.
    """
    task = asyncio.ensure_future(work)
    cancellation: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.cancelled():
                raise
            cancellation = error
    if cancellation is not None:
        task.exception()  # retrieved on purpose: the caller's cancellation wins over it
        raise cancellation
    return task.result()


class BackgroundFinisher:
    """Lets work that must not be interrupted finish on its own when its caller is cancelled.

    For work whose result nobody else holds yet, such as a connection being opened: the caller's
    cancellation is raised at once (unlike :func:`run_to_completion`, the caller need not wait),
    the work goes on to its end, and then its result is handed to ``discard`` and its error, if
    any, is retrieved, so nothing surfaces as "exception was never retrieved". The work must be
    bounded by a timeout of its own. :meth:`call_when_done` lets the caller keep what bounds such
    work (a pool slot) until it ends; :meth:`wait` lets an owner that shuts down see it end.
    One event loop.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        #: What each cancelled caller (by task) left behind, until :meth:`call_when_done` claims it.
        self._left: dict[asyncio.Task[Any] | None, list[asyncio.Future[Any]]] = {}
        #: How many times a caller was cancelled while its work went on.
        self.detached = 0

    @property
    def pending(self) -> int:
        """How much work whose caller is gone is still running."""
        return len(self._pending)

    async def run(self, work: Awaitable[T], *, discard: Callable[[T], object]) -> T:
        """``work``'s result; if the caller is cancelled first, ``work`` finishes in the background."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # cancelled itself (the loop shutting down), not only its caller
                raise
            self.detached += 1
            owner = asyncio.current_task()
            self._pending.add(task)
            self._left.setdefault(owner, []).append(task)
            task.add_done_callback(functools.partial(self._ended, owner=owner, discard=discard))
            raise

    def _ended(
        self, task: asyncio.Future[T], *, owner: asyncio.Task[Any] | None, discard: Callable[[T], object]
    ) -> None:
        self._pending.discard(task)
        left = self._left.get(owner)
        if left is not None and task in left:
            left.remove(task)
            if not left:
                del self._left[owner]
        # A failure is nobody's business any more (the caller that wanted the result is gone),
        # and a later attempt by another caller reports its own.
        if not task.cancelled() and task.exception() is None:
            discard(task.result())

    def call_when_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the work the current task left behind has ended; at once if none."""
        left = self._left.pop(asyncio.current_task(), None)
        if not left:
            callback()
            return
        remaining = len(left)

        def one_ended(_work: asyncio.Future[Any]) -> None:
            nonlocal remaining
            remaining -= 1
            if not remaining:
                callback()

        for work in left:
            work.add_done_callback(one_ended)

    async def wait(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the work left behind by cancelled callers to end."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
