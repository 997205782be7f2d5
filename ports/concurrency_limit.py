"""The ``ConcurrencyLimit`` port."""

from __future__ import annotations

from typing import Protocol


class ConcurrencyLimit(Protocol):
    """How many calls one target should have in flight at once, learnt from the calls' latencies.

    The admission gate in front of a target reads :attr:`limit` and reports every finished call
    to :meth:`on_sample`. An algorithm only does arithmetic: it never sleeps, never raises for a
    sample, reads no clock and keeps ``limit`` within its configured bounds. One instance per
    target (a limit learnt from a replica says nothing about the writer); safe to share between
    the tasks of one event loop.
    """

    @property
    def limit(self) -> int:
        """The number of calls that may be in flight now; at least 1."""
        ...

    def on_sample(self, *, latency_s: float, in_flight: int, dropped: bool) -> None:
        """Learn from one finished call.

        ``latency_s`` is from admission to completion, ``in_flight`` how many calls were in flight
        when it was admitted (itself included), and ``dropped`` whether it ended in a way that
        signals overload (timed out, refused for lack of capacity) rather than with an answer.
        """
        ...
