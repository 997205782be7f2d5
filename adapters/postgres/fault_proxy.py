"""A loopback TCP proxy whose faults can be switched while traffic flows through it.

It listens on ``127.0.0.1`` (a free port unless one is given) and forwards every connection to
the upstream server. Faults: added latency per round trip, a bandwidth limit, resetting every
connection (RST, not FIN), a black hole (connections are accepted and kept but nothing is
forwarded until it is lifted, as when packets are dropped and TCP retransmits), and cutting the
network off (new connections refused, existing ones reset) until :meth:`FaultProxy.restore`.

The proxy runs its own event loop in its own thread, for two reasons. It stands in for the
network, which keeps going whatever the service does: in the service's loop, a service bug that
blocks the loop would freeze the "network" too and hide the fault under test. And the delays it
adds must be its own, not the service loop's scheduling lag under a burst of tasks. Control calls
cross into that thread and return once the change is in force, so they are safe from any thread
or event loop (they block for microseconds).

Demo and test tooling, like the rest of this package: the chaos suite, the benchmarks and
``alchemy-hex demo --faults`` put it between the service and a throwaway server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

LOOPBACK: Final = "127.0.0.1"
_CHUNK_BYTES: Final = 64 * 1024
# How many chunks a direction may buffer before reading stops: TCP's backpressure, roughly.
_QUEUE_CHUNKS: Final = 64
_CONTROL_TIMEOUT_S: Final = 5.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults in force: latency added per round trip (half each way), bytes/s per direction,
    and a delay before each new connection reaches the server (its establishment only)."""

    latency_s: float = 0.0
    connect_delay_s: float = 0.0
    bandwidth_bytes_per_s: float | None = None
    black_hole: bool = False


@dataclass(eq=False, slots=True)
class _Link:
    """One proxied connection: the client's side, the server's side and the two pumps."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


@dataclass(frozen=True, slots=True)
class ProxyCounters:
    """What the proxy saw: connections accepted, open now, reset by a fault, and bytes forwarded."""

    accepted: int
    open: int
    reset: int
    bytes_forwarded: int


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0 makes the kernel drop the socket without the FIN handshake."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``with FaultProxy(upstream_port=5432) as proxy:`` forwards ``proxy.port`` to the server.

    Use :meth:`dsn` to point a DSN at the proxy. Faults apply to traffic in flight as well as to
    new connections. Not meant for anything but loopback tests and the demo.
    """

    def __init__(self, *, upstream_port: int, upstream_host: str = LOOPBACK, port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._requested_port = port
        self.port = 0
        self._faults = Faults()
        self._links: set[_Link] = set()
        self._accepted = 0
        self._reset_count = 0
        self._bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._path_open: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the proxy's thread and loop and listen; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the fault proxy is already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self._listen)

    def close(self) -> None:
        """Reset every connection, stop listening and stop the thread; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._call(self._shut_down)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CONTROL_TIMEOUT_S)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def dsn(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by the proxy's."""
        parts = urlsplit(dsn)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@{LOOPBACK}:{self.port}" if userinfo else f"{LOOPBACK}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- faults ----------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def counters(self) -> ProxyCounters:
        return self._call(self._counters)

    # The faults are one frozen value replaced whole, so the proxy's thread never sees half a change.
    def set_latency(self, round_trip_s: float) -> None:
        """Add ``round_trip_s`` to every round trip: half to each chunk in each direction."""
        if round_trip_s < 0:
            raise ValueError(f"latency must be >= 0, got {round_trip_s!r}")
        self._faults = replace(self._faults, latency_s=round_trip_s)

    def set_connect_delay(self, delay_s: float) -> None:
        """Hold each new connection ``delay_s`` before it reaches the server; later traffic is not delayed."""
        if delay_s < 0:
            raise ValueError(f"connect delay must be >= 0, got {delay_s!r}")
        self._faults = replace(self._faults, connect_delay_s=delay_s)

    def set_bandwidth(self, bytes_per_s: float | None) -> None:
        """Limit each direction of each connection to ``bytes_per_s`` (``None``: unlimited)."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s, got {bytes_per_s!r}")
        self._faults = replace(self._faults, bandwidth_bytes_per_s=bytes_per_s)

    def black_hole(self, on: bool = True) -> None:
        """Accept and keep connections but forward nothing while ``on``; what was held flows after."""
        self._faults = replace(self._faults, black_hole=on)
        self._call(self._open_path if not on else self._close_path)

    def reset_all(self) -> int:
        """Reset every open connection (RST); new ones are accepted as before. Returns how many."""
        return self._call(self._reset_links)

    def cut(self) -> int:
        """Refuse new connections (nothing listens) and reset the open ones; returns how many."""
        return self._call(self._cut)

    def restore(self) -> None:
        """Listen again on the same port and lift every fault."""
        self._faults = Faults()
        self._call(self._restore)

    # --- inside the proxy's loop -----------------------------------------------------------

    def _call(self, control: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``control`` in the proxy's loop and wait for its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the fault proxy is not started")
        return asyncio.run_coroutine_threadsafe(control(), loop).result(_CONTROL_TIMEOUT_S)

    async def _listen(self) -> None:
        if self._path_open is None:
            self._path_open = asyncio.Event()
            self._path_open.set()
        port = self.port or self._requested_port
        self._server = await asyncio.start_server(self._serve, LOOPBACK, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _open_path(self) -> None:
        assert self._path_open is not None
        self._path_open.set()

    async def _close_path(self) -> None:
        assert self._path_open is not None
        self._path_open.clear()

    async def _counters(self) -> ProxyCounters:
        return ProxyCounters(self._accepted, len(self._links), self._reset_count, self._bytes)

    async def _reset_links(self) -> int:
        links = list(self._links)
        for link in links:
            for writer in link.writers():
                _reset(writer)
            for task in link.tasks:
                task.cancel()
        self._links.clear()
        self._reset_count += len(links)
        return len(links)

    async def _cut(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        return await self._reset_links()

    async def _restore(self) -> None:
        await self._open_path()
        if self._server is None:
            await self._listen()

    async def _shut_down(self) -> None:
        tasks = [task for link in self._links for task in link.tasks]
        await self._cut()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection; cancelling this task (a reset) cancels its pumps too."""
        self._accepted += 1
        this = asyncio.current_task()
        assert this is not None
        assert self._path_open is not None
        link = _Link(client=writer, tasks=[this])
        self._links.add(link)
        try:
            # In a black hole the connection is accepted but the server never hears of it.
            await self._path_open.wait()
            if self._faults.connect_delay_s:
                # What the client sent (its startup packet) waits in the socket meanwhile.
                await asyncio.sleep(self._faults.connect_delay_s)
            up_reader, link.upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            await asyncio.gather(self._pump(reader, link.upstream), self._pump(up_reader, writer))
        except OSError:
            _reset(writer)  # the server refused: so does the proxy, as a router would
        except asyncio.CancelledError:
            # Only our own reset or shutdown cancels a connection's task, and it is the top of its
            # task: ending quietly keeps asyncio's stream callback from logging it as an error.
            pass
        finally:
            self._links.discard(link)
            for side in link.writers():
                side.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction: each chunk leaves ``latency/2`` after it arrived, at the bandwidth."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            try:
                while data := await reader.read(_CHUNK_BYTES):
                    await queue.put((loop.time(), data))
            except OSError:
                pass  # a reset by the sender ends its stream like a close: the pump must hear of it
            await queue.put((loop.time(), b""))

        reading = asyncio.create_task(read())
        try:
            while True:
                arrived, data = await queue.get()
                assert self._path_open is not None
                await self._path_open.wait()
                faults = self._faults
                delay = arrived + faults.latency_s / 2 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    break
                if faults.bandwidth_bytes_per_s is not None:
                    # The chunk's transmission time on a link of that bandwidth.
                    await asyncio.sleep(len(data) / faults.bandwidth_bytes_per_s)
                writer.write(data)
                await writer.drain()
                self._bytes += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        # The sender closed its side: close ours, so the other end sees the end of the stream.
        writer.close()
