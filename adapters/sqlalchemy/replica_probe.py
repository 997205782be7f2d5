"""``ReplicaProber``: background probes of each replica's reachability, recovery state and lag."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog

from adapters.sqlalchemy.replica_health import ReplicaHealth
from adapters.sqlalchemy.wal import INSERT_POSITION, POLL_INTERVAL_S, REPLAY_POSITION, parse_lsn

log = structlog.get_logger(__name__)

Connect = Callable[[], Awaitable[Any]]
_REPLICA_STATE: Final = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
)


class ReplicaProber:
    """One background task per replica, probing it every ``interval_s``, each probe within ``timeout_s``.

    A probe opens a fresh connection (so it checks what the pool will need: the server accepts new
    sessions), reads ``pg_is_in_recovery()`` and the replay position, and measures lag: it takes the
    writer's insert position, then asks the replica until it has replayed it. The time that took is
    the lag, how stale a read there is: 0 when it had replayed that much before the writer was
    asked, so an idle writer shows none however long ago the last transaction was (the writer's
    position is read once for all concurrent probes, on a connection kept for it). The insert
    position, not the flushed one: the flushed one may fall inside a record, which replay never
    stops at, so it would read as lag until the next flush. With ``synchronous_commit=off`` on the
    writer, lag includes the WAL writer's delay: commits reach replicas only once flushed.
    Past ``timeout_s`` it stops asking and reports the larger of the time waited and the age of the
    last transaction replayed. With the writer unreachable, lag is unknown (``None``).
    """

    def __init__(
        self,
        *,
        writer: Connect,
        replicas: Mapping[str, tuple[Connect, ReplicaHealth]],
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._writer = writer
        self._replicas = replicas
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._sample: asyncio.Future[tuple[float, int] | None] | None = None
        self._writer_connection: Any = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # A fresh context: the first request to use the provider starts the probes, and its
        # correlation ID must not label every probe's log line from then on.
        self._tasks = [
            loop.create_task(
                self._loop(name), name=f"alchemy-hex-probe-{name}", context=contextvars.Context()
            )
            for name in self._replicas
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sample is not None and not self._sample.done():
            self._sample.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sample
        if self._writer_connection is not None:
            await self._close(self._writer_connection)
            self._writer_connection = None

    async def _loop(self, name: str) -> None:
        connect, health = self._replicas[name]
        while True:
            await self.probe(connect, health)
            await asyncio.sleep(self._interval_s)

    async def probe(self, connect: Connect, health: ReplicaHealth) -> None:
        """Probe one replica now and record the outcome in ``health``."""
        started = self._clock()
        health.probes += 1
        connection: Any = None
        try:
            async with asyncio.timeout(self._timeout_s):
                connection = await connect()
                in_recovery, replay_text, replayed_age_s = await connection.fetchrow(_REPLICA_STATE)
            if in_recovery:
                lag_s = await self._lag(connection, health, parse_lsn(replay_text), replayed_age_s)
            elif health.was_standby:
                health.in_recovery = False
                health.probe_failed("promoted", self._clock())
                return
            else:
                lag_s = None  # a read endpoint on a primary (never was a standby): it has no lag
            health.probe_succeeded(started_at=started, in_recovery=bool(in_recovery), lag_s=lag_s)
        except Exception as error:  # any failure to answer, whatever the driver raised, is unreachability
            log.info("replica.probe_failed", target=health.name, error=type(error).__name__)
            health.probe_failed("unreachable", self._clock())
            connection, dead = None, connection
            if dead is not None:
                dead.terminate()  # never wait on a server that just failed to answer
        finally:
            if connection is not None:
                await self._close(connection)

    async def _close(self, connection: Any) -> None:
        # A polite goodbye, so the server does not log an unexpected EOF for every probe; bounded,
        # and cut short by terminate() if the server stops answering now.
        try:
            await connection.close(timeout=self._timeout_s)
        except Exception:
            connection.terminate()

    async def _lag(
        self, connection: Any, health: ReplicaHealth, replayed: int, replayed_age_s: float | None
    ) -> float | None:
        health.note_replayed(replayed)
        sample = await self.writer_position()
        if sample is None:
            return None
        sampled_at, position = sample
        if replayed >= position:
            return 0.0  # it had replayed everything the writer had, before we even asked the writer
        while (waited := self._clock() - sampled_at) < self._timeout_s:
            async with asyncio.timeout(self._timeout_s):
                replayed = parse_lsn(await connection.fetchval(REPLAY_POSITION))
            health.note_replayed(replayed)
            if replayed >= position:
                return self._clock() - sampled_at
            await asyncio.sleep(POLL_INTERVAL_S)
        # Still behind: lag is at least what we waited; the age of the last transaction it replayed
        # is the better figure when it is larger (a replica far behind under steady writes).
        return max(waited, replayed_age_s or 0.0)

    async def writer_position(self) -> tuple[float, int] | None:
        """When and where the writer's log was, read once for every probe asking at the same time."""
        if self._sample is None or self._sample.done():
            self._sample = asyncio.ensure_future(self._read_writer())
        return await asyncio.shield(self._sample)

    async def _read_writer(self) -> tuple[float, int] | None:
        # One connection kept for sampling: the writer's reachability is the pool's business, and
        # a new session per sample would cost the writer a backend start every interval.
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._writer_connection is None or self._writer_connection.is_closed():
                    self._writer_connection = None
                    self._writer_connection = await self._writer()
                sampled_at = self._clock()
                position = parse_lsn(await self._writer_connection.fetchval(INSERT_POSITION))
        except Exception as error:
            log.info("writer.probe_failed", error=type(error).__name__)
            self._drop_writer_connection()
            return None
        return sampled_at, position

    def _drop_writer_connection(self) -> None:
        if self._writer_connection is not None:
            self._writer_connection.terminate()
            self._writer_connection = None
