"""``AdmissionCounts``: what a rate limiter decided so far, read by the metrics when they are collected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AdmissionCounts:
    """Calls admitted and refused, and how many of the admitted waited (and for how long in all).

    Plain counters the limiter bumps as it decides (an increment or two per call), so that a
    metrics reader pays for them only when it reads them.
    """

    admitted: int = 0
    rejected: int = 0
    waited: int = 0
    wait_total_s: float = 0.0

    def admit(self, wait_s: float) -> None:
        self.admitted += 1
        if wait_s > 0:
            self.waited += 1
            self.wait_total_s += wait_s
