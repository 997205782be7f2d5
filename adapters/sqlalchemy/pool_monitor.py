"""The provider's background monitor: leaks, reclaims, idle connections and the periodic pool statistics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import structlog

from adapters.sqlalchemy.checkouts import CheckoutRegistry
from adapters.sqlalchemy.idle import IdlePolicy, Lease, tend_idle
from adapters.sqlalchemy.provider_options import MonitorOptions
from adapters.sqlalchemy.targets import Target
from ports.connection_provider import ProviderStats, TargetStats

__all__ = ["PoolMonitor"]
log = structlog.get_logger(__name__)


class PoolMonitor:
    """Every ``options.interval_s``: report suspected leaks, reclaim overdue checkouts, tend idle
    connections (through ``lease``, at the lowest priority), and log the statistics now and then.

    Runs as one task of the provider's event loop, until cancelled; nothing it meets stops it.
    """

    def __init__(
        self,
        *,
        registry: CheckoutRegistry,
        targets: Mapping[str, Target],
        idle: IdlePolicy,
        options: MonitorOptions,
        lease: Lease,
        stats: Callable[[], ProviderStats],
        closing: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._registry = registry
        self._targets = targets
        self._idle = idle
        self._options = options
        self._lease = lease
        self._stats = stats
        self._closing = closing
        self._clock = clock

    async def run(self) -> None:
        options, last_log = self._options, self._clock()
        while True:
            await asyncio.sleep(options.interval_s)
            self._registry.report_leaks()
            if options.reclaim_after_s is not None:
                await self._reclaim(options.reclaim_after_s)
            await self._tend()
            interval = options.stats_log_interval_s
            if interval is not None and self._clock() - last_log >= interval:
                last_log = self._clock()
                for t in self._stats().targets:
                    log.info("pool.stats", **{k: getattr(t, k) for k in TargetStats.__slots__})

    async def _tend(self) -> None:
        for target in list(self._targets.values()):
            if self._closing():
                return
            # The grower is told of every queued request; this covers what it is not told of
            # (an adaptive limit rising, connections lost below ``min_idle``).
            target.grower.nudge()
            try:
                await tend_idle(self._lease, target, self._idle, self._clock())
            except Exception as error:  # a dead target is the probes' business, not the monitor's
                log.info("connection.tend_failed", target=target.name, error=type(error).__name__)

    async def _reclaim(self, limit_s: float) -> None:
        """Invalidate connections held past the hard limit; their holders fail on next use."""
        for checkout in self._registry.overdue(limit_s):
            checkout.reclaimed = True
            log.error(
                "connection.reclaimed", target=checkout.target, task=checkout.task_name, limit_s=limit_s
            )
            # Invalidate (terminates the server session, failing any query in flight), then close:
            # an invalidated but open Connection would silently reconnect on its next use.
            with contextlib.suppress(Exception):
                await checkout.connection.invalidate()
                await checkout.connection.close()
