"""Finishing work that must not be abandoned half-way, whoever cancels the caller and how often."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

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
