"""A client-side load through HTTP: workers posting transfers, each outcome in the chaos ledger.

The acknowledged-ledger check is the chaos suite's (:class:`tests.chaos.ledger.AckLedger`): a
2xx is an acknowledgement, a 4xx or a 503 refusal a failure (nothing applied), and a transport
error or a commit whose outcome is unknown leaves the outcome open (applied once or not at all,
never half). Every status is counted for the report's histogram.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import httpx

from ports.errors import CommitOutcomeUnknownError
from tests.chaos.ledger import AckLedger, Request
from tests.chaos.load import stop_workers

INITIAL_BALANCE: Final = 1_000_000
#: A real client pauses after a refusal; it also keeps a worker refused in microseconds from
#: taking the CPU the server needs.
FAILURE_PAUSE_S: Final = 0.01


class HttpRefusal(Exception):
    """The service answered with an error status (the request was not applied)."""


async def seed_accounts(client: httpx.AsyncClient, count: int) -> tuple[list[str], int]:
    """Open and fund ``count`` accounts; their ids and the sum of their balances."""
    accounts = []
    for index in range(count):
        opened = await client.post("/accounts", json={"owner": f"http-load-{index}"})
        opened.raise_for_status()
        account = opened.json()["account_id"]
        funded = await client.post(
            f"/accounts/{account}/deposits",
            json={"amount": INITIAL_BALANCE},
            headers={"Idempotency-Key": f'"seed-{account}"'},
        )
        funded.raise_for_status()
        accounts.append(account)
    return accounts, INITIAL_BALANCE * count


@dataclass
class HttpLoad:
    """``workers`` tasks posting transfers (and balance reads, ``read_share`` of calls) until stopped."""

    client: httpx.AsyncClient
    accounts: list[str]
    workers: int
    read_share: float = 0.0
    seed: int = 11
    ledger: AckLedger = field(default_factory=AckLedger)
    statuses: Counter[str] = field(default_factory=Counter)
    #: (end time, status or error name) of every call, to find when the service came back.
    calls: list[tuple[float, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]

    async def stop(self, timeout_s: float = 30.0) -> int:
        """Let each worker finish its call; returns how many had to be cancelled after ``timeout_s``."""
        return await stop_workers(self._stop, self._tasks, timeout_s)

    def histogram(self) -> dict[str, int]:
        return dict(sorted(self.statuses.items()))

    def first_success_after(self, moment: float) -> float | None:
        ends = [end for end, status in self.calls if end >= moment and status.startswith("2")]
        return min(ends) - moment if ends else None

    async def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while not self._stop.is_set():
            if rng.random() < self.read_share:
                await self._read(rng.choice(self.accounts))
                continue
            source, destination = rng.sample(self.accounts, 2)
            request = Request(f"http-{uuid.uuid4().hex}", source, destination, rng.randint(1, 100))
            if not await self.transfer(request):
                await asyncio.sleep(FAILURE_PAUSE_S)

    async def _read(self, account: str) -> None:
        try:
            response = await self.client.get(f"/accounts/{account}/balance")
        except httpx.HTTPError as error:
            self._count(type(error).__name__)
            await asyncio.sleep(FAILURE_PAUSE_S)
            return
        self._count(str(response.status_code))

    async def transfer(self, request: Request) -> bool:
        """Post ``request``; record its outcome in the ledger; whether it was acknowledged."""
        body = {"source": request.source, "destination": request.destination, "amount": request.amount}
        try:
            response = await self.client.post(
                "/transfers", json=body, headers={"Idempotency-Key": f'"{request.key}"'}
            )
        except httpx.HTTPError as error:
            self._count(type(error).__name__)
            self.ledger.cancelled(request)  # sent, no answer: applied once or not at all
            return False
        self._count(str(response.status_code))
        if response.is_success:
            self.ledger.acknowledged(request)
            return True
        if response.headers.get("content-type") == "application/problem+json" and str(
            response.json().get("type", "")
        ).endswith("commit-outcome-unknown"):
            # The ledger leaves the outcome open for this error, as for the use case's own.
            self.ledger.failed(request, CommitOutcomeUnknownError("reported over HTTP"))
        else:
            self.ledger.failed(request, HttpRefusal(str(response.status_code)))
        return False

    def _count(self, status: str) -> None:
        self.statuses[status] += 1
        self.calls.append((time.monotonic(), status))
