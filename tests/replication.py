"""Test support for read/write splitting: private primaries and replicas that a test may stop or promote.

The session's ``replicated`` fixture is shared; tests that disturb servers start their own here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from adapters.postgres.cluster import PostgresCluster, find_binaries
from tests.support import fetch_value, migrate_database


@dataclass(frozen=True, slots=True)
class Replicated:
    """A migrated primary and its streaming replicas, all running."""

    primary: PostgresCluster
    replicas: tuple[PostgresCluster, ...]

    @property
    def replica_dsns(self) -> list[str]:
        return [replica.dsn() for replica in self.replicas]


@contextmanager
def replicated_servers(replica_settings: Sequence[Mapping[str, str]] = ({},)) -> Iterator[Replicated]:
    """A primary migrated to head and one replica per settings mapping, destroyed on exit."""
    with ExitStack() as stack:
        primary = PostgresCluster(binaries=find_binaries())
        stack.callback(primary.destroy)
        primary.init()
        primary.start()
        migrate_database(primary.dsn())
        replicas = []
        for settings in replica_settings:
            replica = primary.create_replica(settings=settings)
            stack.callback(replica.destroy)
            replicas.append(replica)
        for replica in replicas:
            wait_until_replayed(
                replica.dsn(), "SELECT count(*) FROM pg_tables WHERE tablename = 'entries'", 1
            )
        yield Replicated(primary, tuple(replicas))


def wait_until_replayed(dsn: str, query: str, expected: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while asyncio.run(fetch_value(dsn, query)) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{query!r} did not return {expected!r} in time")
        time.sleep(0.05)


async def eventually(
    condition: Callable[[], bool], *, timeout_s: float = 10.0, interval_s: float = 0.02
) -> None:
    """Wait until ``condition()`` is true, or fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout_s}s"
        await asyncio.sleep(interval_s)
