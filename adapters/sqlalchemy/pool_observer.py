"""``PoolObserver``: what the provider tells about each checkout, connect and statement, as it happens.

Everything the provider can count it keeps in its statistics (``provider.stats()``), which
metrics read when they are collected, so the hot path pays nothing for them. Durations are
different: a histogram needs every one. The provider hands each to its target's observer, one
call each, with the seconds already measured; the observer decides what to do with them (see
``adapters.opentelemetry.pool_metrics``). The default observer does nothing.
"""

from __future__ import annotations

from typing import Final, Protocol

from ports.connection_provider import Priority

__all__ = ["NULL_POOL_OBSERVER", "NullPoolObserver", "PoolObserver", "no_observer"]


class PoolObserver(Protocol):
    """Receives one target's timings; every method must be cheap and must never raise."""

    def waited(self, seconds: float, priority: Priority) -> None:
        """A request was admitted to a connection after ``seconds`` (0 when none was queued before it)."""
        ...

    def used(self, seconds: float) -> None:
        """A connection went back to the pool after being held ``seconds``."""
        ...

    def created(self, seconds: float) -> None:
        """A new connection took ``seconds`` to open (login and TLS included)."""
        ...

    def operation(self, seconds: float, statement: str, error: BaseException | None) -> None:
        """A statement took ``seconds`` (``error`` if it failed); ``statement`` must never become a label."""
        ...


class NullPoolObserver(PoolObserver):
    """The observer of a provider nobody watches: every timing is dropped."""

    def waited(self, seconds: float, priority: Priority) -> None:
        """Nothing."""

    def used(self, seconds: float) -> None:
        """Nothing."""

    def created(self, seconds: float) -> None:
        """Nothing."""

    def operation(self, seconds: float, statement: str, error: BaseException | None) -> None:
        """Nothing."""


NULL_POOL_OBSERVER: Final = NullPoolObserver()


def no_observer(_target: str) -> PoolObserver:
    """The default: no target is observed."""
    return NULL_POOL_OBSERVER
