"""Retry budgets: retries may add only a bounded share to the request rate, sparing a failing database."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final, Protocol

#: The budget's window is kept in this many buckets: deposits and withdrawals age out to a tenth of it.
_BUCKETS: Final = 10


class RetryBudget(Protocol):
    """How many retries the process may still make, shared by every use case.

    Call :meth:`deposit` once per request (its first attempt) and :meth:`try_withdraw` before each
    retry: ``True`` spends one retry, ``False`` means the budget is spent and the caller gets the
    error instead of a retry. Never raises; safe to share between the tasks of one event loop.
    """

    def deposit(self) -> None:
        """Record one request, which earns the budget its share of a retry."""
        ...

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget has one; ``False`` when it is spent."""
        ...


class TokenRetryBudget(RetryBudget):
    """Finagle's token retry budget: retries add at most ``ratio`` to the request rate, plus a floor.

    Each request deposits ``ratio`` tokens, each retry withdraws one, and both age out after
    ``ttl_s`` (to a tenth of it). A retry is allowed while ``ratio * requests + min_retries_per_s
    * ttl_s - retries`` over the last ``ttl_s`` is at least one, so in the long run retries stay
    under ``ratio * request rate + min_retries_per_s``: the floor lets a quiet process still retry,
    the ratio keeps a busy one from multiplying its load by ``max_attempts`` when the database
    fails. ``ratio=0.2`` is "retries may add at most 20%".
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries_per_s: float = 10.0,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ratio < math.inf:
            raise ValueError(f"ratio must be a finite number >= 0, got {ratio!r}")
        if not 0 <= min_retries_per_s < math.inf:
            raise ValueError(f"min_retries_per_s must be a finite number >= 0, got {min_retries_per_s!r}")
        if not 0 < ttl_s < math.inf:
            raise ValueError(f"ttl_s must be a finite number > 0, got {ttl_s!r}")
        self._ratio = ratio
        self._reserve = min_retries_per_s * ttl_s
        self._bucket_s = ttl_s / _BUCKETS
        self._clock = clock
        self._sums = [0.0] * _BUCKETS
        self._bucket_ids = [-1] * _BUCKETS  # which bucket number each slot holds now

    @property
    def balance(self) -> float:
        """How many retries could be made now (fractional). For stats and tests."""
        newest = self._number(self._clock())
        in_window = sum(
            total
            for number, total in zip(self._bucket_ids, self._sums, strict=True)
            if newest - _BUCKETS < number <= newest
        )
        return self._reserve + in_window

    def deposit(self) -> None:
        """Add ``ratio`` of a retry, for ``ttl_s``."""
        self._add(self._ratio)

    def try_withdraw(self) -> bool:
        """Spend one retry if at least one is left."""
        # A millionth of slack: five deposits of 0.2 must add up to a whole retry.
        if self.balance < 1.0 - 1e-6:
            return False
        self._add(-1.0)
        return True

    def _add(self, amount: float) -> None:
        number = self._number(self._clock())
        slot = number % _BUCKETS
        if self._bucket_ids[slot] != number:
            self._sums[slot], self._bucket_ids[slot] = 0.0, number
        self._sums[slot] += amount

    def _number(self, now: float) -> int:
        return math.floor(now / self._bucket_s)


class UnlimitedRetryBudget(RetryBudget):
    """The switched-off budget: every retry the retry policy allows is made."""

    def deposit(self) -> None:
        """Nothing to record."""

    def try_withdraw(self) -> bool:
        """Always ``True``."""
        return True
