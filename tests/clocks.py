"""Simulated time for the policy tests: a clock, and sleeps woken in deadline order as time advances."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class SimulatedTime:
    """A clock and a sleep: time moves only in ``advance``, which wakes sleepers in deadline order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay_s, next(self._order), woken))
        await woken

    async def advance(self, delay_s: float) -> None:
        until = self.now + delay_s
        await settle()
        while self._sleepers and self._sleepers[0][0] <= until:
            wake_at, _, woken = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake_at)
            if not woken.done():
                woken.set_result(None)
            await settle()
        self.now = until


async def settle() -> None:
    """Let every runnable task run; a few loop turns cover the short await chains used here."""
    for _ in range(5):
        await asyncio.sleep(0)
