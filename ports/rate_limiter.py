"""The ``RateLimiter`` port."""

from __future__ import annotations

from typing import Protocol


class RateLimiter(Protocol):
    """Admits calls at a configured rate, per key (for example per tenant).

    ``acquire`` either returns once ``cost`` tokens were taken, possibly after waiting (in FIFO
    order per key, never longer than the limiter's maximum wait), or raises
    :class:`ports.errors.RateLimitExceededError` carrying ``retry_after_s``. Safe to share between
    tasks of one event loop.
    """

    async def acquire(self, key: str = "default", *, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` or raise ``RateLimitExceededError``."""
        ...
