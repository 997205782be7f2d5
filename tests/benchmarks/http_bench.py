"""``make bench-http``: ``alchemy-hex serve`` against a plain FastAPI + SQLAlchemy server, open loop.

Both servers run as processes on loopback with the same uvicorn, pool size (10 + 5 overflow) and
endpoints, each on its own database of one throwaway PostgreSQL cluster. The load generator is
the project's own (a small HTTP/1.1 client on asyncio streams, much cheaper than a full client
library, since it shares the 2 cores with both servers and PostgreSQL): requests are scheduled at
a constant rate, request *i* at ``t0 + i / rate``, and each latency is measured from that
scheduled time, so a stall shows as latency instead of as requests never sent (coordinated
omission). In-flight requests are capped (``dropped`` counts those not sent), every phase is
bounded in count and time, and only 127.0.0.1 is ever addressed.

Per server: **capacity** (closed loop, 32 concurrent clients: the throughput figure), then open
loop at 60 % of the lower capacity: **steady**; **restart** (``pg_ctl stop -m fast``, start
again); **frozen** (SIGSTOP of every PostgreSQL process for 4 s); **overload** at twice the
server's own capacity. Reported per phase and server: achieved rate, p50 / p99 / p99.9, the
status histogram, p99 of the 503s, time to recover, the slowest ``/livez`` answer. The
acknowledged transfers of both servers are checked against their databases (lost, duplicated).
Figures are merged into ``bench-results.json`` under ``"http"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from adapters.postgres.cluster import PostgresCluster, find_binaries
from adapters.postgres.processes import children_of, live_postmaster
from tests.chaos.harness import LAB_SERVER_SETTINGS
from tests.chaos.ledger import AckLedger, Request
from tests.http.support import CLI, LOOPBACK, free_port, wait_ready
from tests.support import create_database, migrate_database

SECONDS: Final = float(os.environ.get("BENCH_HTTP_SECONDS", "5"))
CAPACITY_CLIENTS: Final = 32
MAX_IN_FLIGHT: Final = 512
REQUEST_TIMEOUT_S: Final = 10.0
WRITE_SHARE: Final = 0.3
ACCOUNTS: Final = 200
FREEZE_S: Final = 4.0
#: Every request says how long its caller waits (``Request-Timeout``, as a load balancer with a 2 s
#: route timeout would): alchemy-hex bounds every stage by it; the plain server ignores it.
CALLER_BUDGET_S: Final = 2.0
#: alchemy-hex's settings in the run: the deadlines a service behind a load balancer should have
#: (a connection within 0.5 s, a statement within 2 s, so a silent database ends a call after
#: 2 + 1 s, and the caller's 2 s budget ends it sooner; a call still unanswered after 0.5 s, a
#: hundred times this ledger's usual, counts as slow while it runs, so a frozen database opens
#: the circuit; which tries again after 1 s); at most 64 requests in flight (twice the capacity
#: phase's clients), beyond which a request is refused before it costs any CPU beyond its parsing.
#: The plain server has no such knobs.
OURS_ENV: Final = {
    "HEX_DATABASE__ACQUIRE_TIMEOUT_S": "0.5",
    "HEX_DATABASE__STATEMENT_TIMEOUT_S": "2",
    "HEX_DATABASE__CONNECT_TIMEOUT_S": "1",
    "HEX_CIRCUIT_BREAKER__SLOW_CALL_DURATION_S": "0.5",
    "HEX_CIRCUIT_BREAKER__RECOVERY_TIME_S": "1",
    "HEX_HTTP__MAX_IN_FLIGHT": "64",
}


class HttpClient:
    """Keep-alive HTTP/1.1 connections to one loopback server: just enough of the protocol for JSON APIs."""

    def __init__(self, port: int, *, max_connections: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open = 0
        self._max = max_connections
        self._freed = asyncio.Condition()

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> int:
        reader, writer = await self._acquire()
        keep = False
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            head = (
                f"{method} {path} HTTP/1.1\r\nhost: {LOOPBACK}\r\ncontent-length: {len(payload)}\r\n"
                f"request-timeout: {CALLER_BUDGET_S:g}\r\n"
            )
            if body is not None:
                head += "content-type: application/json\r\n"
            if key is not None:
                head += f'idempotency-key: "{key}"\r\n'
            writer.write(head.encode() + b"\r\n" + payload)
            status, keep = await self._read_response(reader)
            return status
        finally:
            await self._release(reader, writer, keep)

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("closed before the response")
        status = int(status_line.split(b" ", 2)[1])
        length, keep = 0, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        await reader.readexactly(length)
        return status, keep

    async def _acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self._freed:
            while not self._idle and self._open >= self._max:
                await self._freed.wait()
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return await asyncio.open_connection(LOOPBACK, self._port)
        except BaseException:
            async with self._freed:
                self._open -= 1
                self._freed.notify()
            raise

    async def _release(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool) -> None:
        async with self._freed:
            if keep:
                self._idle.append((reader, writer))
            else:
                self._open -= 1
                writer.close()
            self._freed.notify()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class Workload:
    """The request mix: balance reads and transfers between seeded accounts, every transfer in the ledger."""

    accounts: list[str]
    ledger: AckLedger = field(default_factory=AckLedger)
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    async def one(self, client: HttpClient) -> int:
        if self.rng.random() >= WRITE_SHARE:
            return await client.request("GET", f"/accounts/{self.rng.choice(self.accounts)}/balance")
        source, destination = self.rng.sample(self.accounts, 2)
        request = Request(f"bench-{uuid.uuid4().hex}", source, destination, self.rng.randint(1, 10))
        body = {"source": source, "destination": destination, "amount": request.amount}
        try:
            status = await client.request("POST", "/transfers", body, key=request.key)
        except BaseException:
            self.ledger.cancelled(request)
            raise
        if 200 <= status < 300:
            self.ledger.acknowledged(request)
        else:
            self.ledger.failed(request, RuntimeError(str(status)))
        return status


@dataclass
class Samples:
    """Every finished request: when it ended, its status (or error) and its latency."""

    started: float
    ended: list[float] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    dropped: int = 0

    def add(self, ended: float, outcome: str, latency_s: float) -> None:
        self.ended.append(ended)
        self.outcome.append(outcome)
        self.latency_s.append(latency_s)

    def summary(self, seconds: float, fault_end: float | None = None) -> dict[str, Any]:
        ok = [lat for lat, o in zip(self.latency_s, self.outcome, strict=True) if o.startswith("2")]
        refused = [lat for lat, o in zip(self.latency_s, self.outcome, strict=True) if o == "503"]
        result: dict[str, Any] = {
            "sent_per_s": round(len(self.outcome) / seconds, 1),
            "ok_per_s": round(len(ok) / seconds, 1),
            "p50_ms": _ms(percentile(self.latency_s, 0.5)),
            "p99_ms": _ms(percentile(self.latency_s, 0.99)),
            "p999_ms": _ms(percentile(self.latency_s, 0.999)),
            "ok_p99_ms": _ms(percentile(ok, 0.99)),
            "refused_503_p99_ms": _ms(percentile(refused, 0.99)),
            "statuses": dict(sorted(Counter(self.outcome).items())),
            "dropped": self.dropped,
        }
        if fault_end is not None:
            after = [
                e
                for e, o in zip(self.ended, self.outcome, strict=True)
                if e >= fault_end and o.startswith("2")
            ]
            result["recovery_s"] = round(min(after) - fault_end, 3) if after else None
        return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


async def open_loop(client: HttpClient, work: Workload, rate: float, seconds: float) -> Samples:
    """``rate`` requests a second for ``seconds``, latency from each request's scheduled time."""
    loop = asyncio.get_running_loop()
    samples = Samples(started=loop.time())
    pending: set[asyncio.Task[None]] = set()

    async def send(scheduled: float) -> None:
        try:
            status = await asyncio.wait_for(work.one(client), REQUEST_TIMEOUT_S)
            outcome = str(status)
        except TimeoutError:
            outcome = "timeout"
        except OSError as error:
            outcome = type(error).__name__
        now = loop.time()
        samples.add(now, outcome, now - scheduled)

    total = int(rate * seconds)
    for index in range(total):
        scheduled = samples.started + index / rate
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        if len(pending) >= MAX_IN_FLIGHT:
            samples.dropped += 1
            continue
        task = asyncio.create_task(send(scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S + 1)
    return samples


async def closed_loop(client: HttpClient, work: Workload, clients: int, seconds: float) -> float:
    """Requests a second with ``clients`` callers each waiting for its answer (the capacity)."""
    done = 0
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            if 200 <= await work.one(client) < 300:
                done += 1

    await asyncio.gather(*(caller() for _ in range(clients)))
    return done / seconds


async def livez_watch(port: int, stop: asyncio.Event) -> dict[str, Any]:
    """Poll ``/livez`` every 50 ms on a connection of its own; the slowest answer and any failure."""
    client = HttpClient(port, max_connections=1)
    slowest, failures, polls = 0.0, 0, 0
    while not stop.is_set():
        start = time.perf_counter()
        try:
            failures += await asyncio.wait_for(client.request("GET", "/livez"), 5.0) != 200
        except (TimeoutError, OSError):
            failures += 1
        slowest = max(slowest, time.perf_counter() - start)
        polls += 1
        await asyncio.sleep(0.05)
    client.close()
    return {"livez_max_ms": _ms(slowest), "livez_failures": failures, "livez_polls": polls}


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    work: Workload | None = None


@contextmanager
def start_server(
    name: str, argv: list[str], dsn: str, port: int, log: Path, extra: dict[str, str] | None = None
) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    env |= {
        "DATABASE_URL": dsn,
        "HEX_LOGGING__LEVEL": "error",
        "HEX_HTTP__DRAIN_DELAY_S": "0",
        **(extra or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://{LOOPBACK}:{port}", process=process) if name == "alchemy-hex" else _wait_live(
            port, process
        )
        yield Server(name, port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_live(port: int, process: subprocess.Popen[bytes]) -> None:
    import httpx

    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"the plain server exited with {process.returncode}")
        try:
            if httpx.get(f"http://{LOOPBACK}:{port}/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the plain server did not start")


def _signal_cluster(cluster: PostgresCluster, signum: signal.Signals) -> None:
    postmaster = live_postmaster(cluster.data_dir)
    if postmaster is None:
        return
    for pid in [postmaster, *children_of(postmaster)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


async def seed(server: Server) -> Workload:
    return Workload(await _account_ids(server.port, ACCOUNTS))


async def _account_ids(port: int, count: int) -> list[str]:
    import httpx

    ids = []
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}") as client:
        for index in range(count):
            opened = await client.post("/accounts", json={"owner": f"funded-{index}"})
            account = opened.json()["account_id"]
            funded = await client.post(
                f"/accounts/{account}/deposits",
                json={"amount": 10**9},
                headers={"Idempotency-Key": f'"s-{account}"'},
            )
            assert funded.status_code == 201, funded.text
            ids.append(account)
    return ids


async def faulted_phase(
    server: Server, rate: float, fault: Callable[[], Any], *, fault_at_s: float = 1.5, seconds: float = 8.0
) -> dict[str, Any]:
    """Open loop at ``rate`` for ``seconds``; ``fault`` (blocking, in a thread) runs after ``fault_at_s``."""
    assert server.work is not None
    client = HttpClient(server.port, max_connections=MAX_IN_FLIGHT)
    stop = asyncio.Event()
    watch = asyncio.create_task(livez_watch(server.port, stop))

    async def inject() -> float:
        await asyncio.sleep(fault_at_s)
        await asyncio.to_thread(fault)
        return asyncio.get_running_loop().time()

    injected = asyncio.create_task(inject())
    samples = await open_loop(client, server.work, rate, seconds)
    fault_end = await injected
    stop.set()
    client.close()
    return samples.summary(seconds, fault_end) | await watch


async def run_server(
    server: Server, cluster: PostgresCluster, rate: float, capacity: float
) -> dict[str, Any]:
    assert server.work is not None
    results: dict[str, Any] = {"capacity_ok_per_s": round(capacity, 1)}
    client = HttpClient(server.port, max_connections=MAX_IN_FLIGHT)
    results["steady"] = (await open_loop(client, server.work, rate, SECONDS)).summary(SECONDS)
    client.close()
    print(f"  {server.name:<12} steady   {results['steady']}", file=sys.stderr)

    def restart() -> None:
        cluster.stop("fast")
        time.sleep(1.0)
        cluster.start()

    results["restart"] = await faulted_phase(server, rate, restart)
    print(f"  {server.name:<12} restart  {results['restart']}", file=sys.stderr)

    def freeze() -> None:
        _signal_cluster(cluster, signal.SIGSTOP)
        try:
            time.sleep(FREEZE_S)
        finally:
            _signal_cluster(cluster, signal.SIGCONT)

    results["frozen"] = await faulted_phase(server, rate, freeze)
    print(f"  {server.name:<12} frozen   {results['frozen']}", file=sys.stderr)
    client = HttpClient(server.port, max_connections=MAX_IN_FLIGHT)
    overload = await open_loop(client, server.work, 2 * capacity, SECONDS)
    client.close()
    results["overload_2x"] = overload.summary(SECONDS)
    print(f"  {server.name:<12} overload {results['overload_2x']}", file=sys.stderr)
    return results


async def measure_capacity(server: Server) -> float:
    assert server.work is not None
    client = HttpClient(server.port, max_connections=CAPACITY_CLIENTS)
    await closed_loop(client, server.work, CAPACITY_CLIENTS, 1.0)  # warm-up
    capacity = await closed_loop(client, server.work, CAPACITY_CLIENTS, SECONDS)
    client.close()
    return capacity


async def bench(servers: list[Server], cluster: PostgresCluster, dsns: dict[str, str]) -> dict[str, Any]:
    for server in servers:
        server.work = await seed(server)
    capacity: dict[str, float] = {}
    for _ in range(2):  # interleaved, the better of two rounds each
        for server in servers:
            capacity[server.name] = max(capacity.get(server.name, 0.0), await measure_capacity(server))
    rate = round(0.6 * min(capacity.values()))
    print(f"  capacity {capacity}; open-loop rate {rate}/s", file=sys.stderr)
    results: dict[str, Any] = {
        "rate_per_s": rate,
        "write_share": WRITE_SHARE,
        "seconds": SECONDS,
        "accounts": ACCOUNTS,
        "alchemy_hex_settings": OURS_ENV,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    for server in servers:
        results[server.name] = await run_server(server, cluster, rate, capacity[server.name])
        assert server.work is not None
        verdict = await server.work.ledger.verify(dsns[server.name], total_before=10**9 * ACCOUNTS)
        results[server.name]["ledger"] = {
            "acknowledged": verdict.acknowledged,
            "lost": verdict.lost,
            "duplicated": verdict.duplicated,
            "half_applied": verdict.half_applied,
        }
    ours, plain = results["alchemy-hex"], results["plain"]
    results["ratios"] = {
        "capacity_ours_vs_plain": round(ours["capacity_ok_per_s"] / plain["capacity_ok_per_s"], 3),
        "steady_p99_ours_vs_plain": _ratio(ours["steady"]["p99_ms"], plain["steady"]["p99_ms"]),
    }
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def main() -> None:
    log_dir = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    with PostgresCluster(binaries=find_binaries(), settings=LAB_SERVER_SETTINGS) as cluster:
        template = create_database(cluster.dsn(), prefix="bench_http_template")
        migrate_database(template)
        name = template.rsplit("/", 1)[1]
        dsns = {
            s: create_database(cluster.dsn(), template=name, prefix="bench_http")
            for s in ("alchemy-hex", "plain")
        }
        ours_port, plain_port = free_port(), free_port()
        ours_argv = [CLI, "serve", "--host", LOOPBACK, "--port", str(ours_port)]
        plain_argv = [sys.executable, "-m", "tests.benchmarks.plain_http_server", "--port", str(plain_port)]
        with (
            start_server(
                "alchemy-hex",
                ours_argv,
                dsns["alchemy-hex"],
                ours_port,
                log_dir / "bench-http-ours.log",
                extra=OURS_ENV,
            ) as ours,
            start_server(
                "plain", plain_argv, dsns["plain"], plain_port, log_dir / "bench-http-plain.log"
            ) as plain,
        ):
            results = asyncio.run(bench([ours, plain], cluster, dsns))
    path = Path("bench-results.json")
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged["http"] = results
    path.write_text(json.dumps(merged, indent=2))
    print(json.dumps(results["ratios"]))
    for name in ("alchemy-hex", "plain"):
        r = results[name]
        print(
            f"{name:<12} capacity {r['capacity_ok_per_s']}/s  steady p99 {r['steady']['p99_ms']} ms  "
            f"restart 503 p99 {r['restart']['refused_503_p99_ms']} ms, "
            f"recovery {r['restart']['recovery_s']} s  "
            f"frozen p99 {r['frozen']['p99_ms']} ms  overload ok {r['overload_2x']['ok_per_s']}/s  "
            f"ledger {r['ledger']}"
        )
    print('figures merged into bench-results.json under "http"', file=sys.stderr)


if __name__ == "__main__":
    main()
