"""The caller's deadline: a context-local point in time that every stage of a call must respect.

A deadline is absolute (seconds on ``time.monotonic()``, the clock asyncio's loop uses) and travels
with the task in a :class:`~contextvars.ContextVar`, as gRPC's, Finagle's and userver's do, so the
adapters that wait (rate limiter, admission gate, connect, each statement, retries) read how much
time is left without every signature carrying it. :func:`deadline_scope` sets one; nested scopes
can only shorten it, never extend it. Without a scope there is no deadline, and nothing changes.

An HTTP adapter sets the scope from a header such as ``Request-Timeout`` or ``X-Request-Timeout``
with :func:`parse_timeout_s`: a bare number is seconds (``2.5``), ``ms`` and ``s`` suffixes say so
(``250ms``, ``2s``).
"""

from __future__ import annotations

import enum
import math
import re
import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Final

from ports.errors import DeadlineExceededError

__all__ = [
    "DeadlineStage",
    "deadline_scope",
    "expires_at",
    "parse_timeout_s",
    "remaining_s",
    "require",
]

#: When the current call must be over, on ``time.monotonic()``; ``None``: no deadline.
_EXPIRES_AT: Final[ContextVar[float | None]] = ContextVar("hex_deadline", default=None)
_TIMEOUT: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*", re.I)


class DeadlineStage(enum.StrEnum):
    """Where a call ran out of time, as :attr:`DeadlineExceededError.stage` names it."""

    #: Before any work of an attempt: no pool checkout, no round trip.
    START = "start"
    RATE_LIMITER = "rate_limiter"
    #: Waiting for a free connection in the target's admission gate.
    ADMISSION = "admission"
    CONNECT = "connect"
    STATEMENT = "statement"
    #: The deadline passed before ``COMMIT``: the unit was rolled back, so nothing was applied.
    COMMIT = "commit"


def expires_at() -> float | None:
    """When the current deadline ends (``time.monotonic()`` seconds), or ``None`` without one."""
    return _EXPIRES_AT.get()


def remaining_s() -> float | None:
    """Seconds left until the current deadline (negative once passed), or ``None`` without one."""
    at = _EXPIRES_AT.get()
    return None if at is None else at - time.monotonic()


def require(stage: DeadlineStage, *, target: str | None = None) -> float | None:
    """The seconds left, or ``None`` without a deadline; raises ``DeadlineExceededError`` once it passed."""
    at = _EXPIRES_AT.get()
    if at is None:
        return None
    left = at - time.monotonic()
    if left <= 0:
        raise DeadlineExceededError(stage, target=target)
    return left


class deadline_scope:  # lower case, as contextlib's managers: it is used like one
    """``with deadline_scope(2.0):`` runs the block under a deadline 2 s from now (or the enclosing one).

    The enclosing deadline wins when it is sooner; ``None`` leaves the current one as it is. A
    timeout must be a number >= 0 (0 is already expired: the first stage raises
    ``DeadlineExceededError`` without any I/O). Entering yields the effective expiry time. A class,
    not a generator, since a use case may enter one on every call.
    """

    __slots__ = ("_timeout_s", "_token")

    def __init__(self, timeout_s: float | None) -> None:
        if timeout_s is not None and not (timeout_s >= 0 and not math.isnan(timeout_s)):
            raise ValueError(f"a deadline's timeout must be a number >= 0 seconds, got {timeout_s!r}")
        self._timeout_s = timeout_s
        self._token: Token[float | None] | None = None

    def __enter__(self) -> float | None:
        current = _EXPIRES_AT.get()
        if self._timeout_s is None:
            return current
        at = time.monotonic() + self._timeout_s
        if current is not None and current <= at:
            return current  # nested scopes only shorten
        self._token = _EXPIRES_AT.set(at)
        return at

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _EXPIRES_AT.reset(self._token)
            self._token = None


def parse_timeout_s(value: str) -> float:
    """Seconds from a timeout header's value: ``"2.5"`` and ``"2.5s"`` are seconds, ``"250ms"`` milliseconds.

    Raises ``ValueError`` (without echoing more than the value's length) for anything else,
    negative numbers included.
    """
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise ValueError(f"a timeout must be a number of seconds or 'NNNms' (got {len(value)} characters)")
    number = float(match.group(1))
    return number / 1000 if (match.group(2) or "").lower() == "ms" else number
