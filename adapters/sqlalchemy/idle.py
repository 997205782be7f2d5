"""Tending idle pooled connections: keepalive pings and the idle timeout, from the monitor task."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.targets import Target
from ports.connection_provider import WRITER, Intent, Priority

log = structlog.get_logger(__name__)
Lease = Callable[..., AbstractAsyncContextManager[AsyncConnection]]


@dataclass(frozen=True, slots=True)
class IdlePolicy:
    """``keepalive_s``: ping connections idle this long; ``idle_timeout_s``: close those idle this long,
    keeping at least ``min_idle`` open. ``None`` switches either off."""

    keepalive_s: float | None
    idle_timeout_s: float | None
    min_idle: int


async def tend_idle(lease: Lease, target: Target, policy: IdlePolicy, now: float) -> None:
    """Close connections idle past the timeout (beyond ``min_idle``), then ping the long-idle rest.

    Pings check out through the target's own admission gate at the lowest priority, and only when
    nobody is waiting, so tending never takes a connection from real work. The pool hands out the
    longest-idle connection first (FIFO), which is exactly the one to tend.
    """
    ages = sorted((now - since for since in target.idle_since.values()), reverse=True)
    expired = 0
    if policy.idle_timeout_s is not None:
        expired = min(sum(age > policy.idle_timeout_s for age in ages), max(len(ages) - policy.min_idle, 0))
    stale = 0 if policy.keepalive_s is None else sum(age > policy.keepalive_s for age in ages[expired:])
    if expired and not target.gate.waiting:
        # Closed for good, the pool's count lowered (see :meth:`PoolGrower.retire_idle`): the
        # grower opens another only when demand or ``min_idle`` asks for it.
        retired = await target.grower.retire_idle(expired)
        if retired:
            log.info(
                "connection.idle_closed",
                target=target.name,
                count=retired,
                idle_timeout_s=policy.idle_timeout_s,
            )
    intent = Intent.WRITE if target.name == WRITER else Intent.READ
    for _ in range(stale):
        if target.gate.waiting:
            return
        async with lease(intent, target=target.name, priority=Priority.LOW) as connection:
            await connection.scalar(text("SELECT 1"))
            await connection.rollback()
