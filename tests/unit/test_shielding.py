"""Work that a cancelled caller leaves behind: finished, its result discarded, its error retrieved."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from adapters.asyncio.shielding import BackgroundFinisher


@contextmanager
def escaped_errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler inside the block (after a collection)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
        gc.collect()  # "never retrieved" is reported when the orphan is collected
    finally:
        loop.set_exception_handler(previous)


async def _opened(gate: asyncio.Event, value: str = "connection") -> str:
    await gate.wait()
    return value


async def _failing(gate: asyncio.Event) -> str:
    await gate.wait()
    raise ConnectionError("the server went away")


async def test_the_result_of_work_nobody_cancelled_goes_to_the_caller_and_nothing_is_discarded() -> None:
    finisher, discarded = BackgroundFinisher(), list[str]()
    gate = asyncio.Event()
    gate.set()

    assert await finisher.run(_opened(gate), discard=discarded.append) == "connection"
    assert (discarded, finisher.detached, finisher.pending) == ([], 0, 0)


async def test_a_cancelled_caller_returns_at_once_and_its_work_ends_later_with_the_result_discarded() -> None:
    finisher, discarded = BackgroundFinisher(), list[str]()
    gate = asyncio.Event()
    caller = asyncio.create_task(finisher.run(_opened(gate), discard=discarded.append))
    await asyncio.sleep(0)

    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert (finisher.detached, finisher.pending, discarded) == (1, 1, [])

    gate.set()
    await finisher.wait(timeout_s=1)
    await asyncio.sleep(0)  # done callbacks run on the next turn
    assert (finisher.pending, discarded) == (0, ["connection"])


async def test_the_error_of_work_left_behind_is_retrieved_and_never_reaches_the_event_loop() -> None:
    finisher = BackgroundFinisher()
    gate = asyncio.Event()
    with escaped_errors() as seen:
        caller = asyncio.create_task(finisher.run(_failing(gate), discard=lambda _: None))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        gate.set()
        await finisher.wait(timeout_s=1)
        await asyncio.sleep(0)
        del caller
    assert seen == []
    assert finisher.pending == 0


async def test_a_callback_waits_for_the_work_its_task_left_behind_and_runs_at_once_when_there_is_none() -> (
    None
):
    finisher, released = BackgroundFinisher(), list[str]()
    gate = asyncio.Event()

    async def cancelled_request() -> None:
        try:
            await finisher.run(_opened(gate), discard=lambda _: None)
        finally:
            finisher.call_when_done(lambda: released.append("slot"))

    request = asyncio.create_task(cancelled_request())
    await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert released == []

    gate.set()
    await finisher.wait(timeout_s=1)
    await asyncio.sleep(0)
    assert released == ["slot"]

    finisher.call_when_done(lambda: released.append("at once"))
    assert released == ["slot", "at once"]


async def test_work_that_is_itself_cancelled_is_not_left_behind() -> None:
    finisher, discarded = BackgroundFinisher(), list[str]()
    work = asyncio.ensure_future(_opened(asyncio.Event()))
    caller = asyncio.create_task(finisher.run(work, discard=discarded.append))
    await asyncio.sleep(0)

    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert (finisher.detached, finisher.pending, discarded) == (0, 0, [])
