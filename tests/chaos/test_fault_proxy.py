"""The fault proxy against a loopback echo server: every fault, switched while connections are open."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.postgres.fault_proxy import LOOPBACK, FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, LOOPBACK, 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    with FaultProxy(upstream_port=echo_port) as started:
        yield started


class _Client:
    """One connection through the proxy; ``round_trip`` sends bytes and waits for their echo."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def round_trip(self, data: bytes, timeout_s: float = 2.0) -> float:
        started = time.monotonic()
        self.writer.write(data)
        await self.writer.drain()
        echoed = await asyncio.wait_for(self.reader.readexactly(len(data)), timeout_s)
        assert echoed == data
        return time.monotonic() - started

    async def close(self) -> None:
        self.writer.close()
        # A reset connection reports its reset once more on close.
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def client(proxy: FaultProxy) -> AsyncIterator[_Client]:
    opened = _Client(*await asyncio.open_connection(LOOPBACK, proxy.port))
    yield opened
    await opened.close()


async def test_bytes_flow_both_ways_unchanged(client: _Client, proxy: FaultProxy) -> None:
    assert await client.round_trip(b"hello" * 1000) < 0.5
    assert proxy.counters.accepted == 1


async def test_latency_is_added_to_each_round_trip_of_an_open_connection(
    client: _Client, proxy: FaultProxy
) -> None:
    assert await client.round_trip(b"x") < 0.05

    proxy.set_latency(0.15)

    assert 0.15 <= await client.round_trip(b"y") < 0.4
    proxy.set_latency(0)
    assert await client.round_trip(b"z") < 0.05


async def test_a_bandwidth_limit_paces_the_bytes(client: _Client, proxy: FaultProxy) -> None:
    proxy.set_bandwidth(100_000)

    # 20 kB each way at 100 kB/s: at least 0.2 s for the round trip.
    assert 0.2 <= await client.round_trip(b"b" * 10_000 * 2) < 1.5


async def test_reset_all_sends_a_reset_to_every_open_connection(client: _Client, proxy: FaultProxy) -> None:
    await client.round_trip(b"before")

    assert proxy.reset_all() == 1

    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await client.round_trip(b"after")
    fresh = _Client(*await asyncio.open_connection(LOOPBACK, proxy.port))
    assert await fresh.round_trip(b"new") < 0.5
    await fresh.close()


async def test_a_black_hole_holds_traffic_until_it_is_lifted(client: _Client, proxy: FaultProxy) -> None:
    proxy.black_hole()
    client.writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.reader.readexactly(4), 0.3)
    newcomer = _Client(*await asyncio.open_connection(LOOPBACK, proxy.port))  # accepted, then silence

    proxy.black_hole(False)

    assert await asyncio.wait_for(client.reader.readexactly(4), 1) == b"held"
    assert await newcomer.round_trip(b"late") < 0.5
    await newcomer.close()


async def test_a_cut_refuses_new_connections_and_resets_old_ones_until_restored(
    client: _Client, proxy: FaultProxy
) -> None:
    port = proxy.port
    await client.round_trip(b"before")

    assert proxy.cut() == 1

    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(LOOPBACK, port)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await client.round_trip(b"cut")
    proxy.restore()
    back = _Client(*await asyncio.open_connection(LOOPBACK, port))
    assert await back.round_trip(b"back") < 0.5
    await back.close()


def test_dsn_points_at_the_proxy_and_keeps_user_password_and_database(proxy: FaultProxy) -> None:
    dsn = proxy.dsn("postgresql://app:s3cret@127.0.0.1:5432/ledger?sslmode=disable")

    assert dsn == f"postgresql://app:s3cret@127.0.0.1:{proxy.port}/ledger?sslmode=disable"
