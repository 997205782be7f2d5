"""``alchemy-hex demo --faults``: the demo's workload while a script breaks its throwaway servers.

Demo tooling. On the embedded primary + replica only (it stops servers, so never on a database
of yours), the service reaches the writer through a loopback fault proxy
(``adapters.postgres.fault_proxy``), and while the demo's own workload runs (``demo.run_demo``)
:class:`FaultScript` stops a replica and starts it again, restarts the writer (``-m fast``) and
adds latency on the writer's path, printing a line as each step starts and ends. It ends with
the demo's summary, the steps, a check that every acknowledged transfer is stored, and a
timeline picture (``pictures.timeline_chart``, as ``make chaos`` draws its scenarios).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import asyncpg

import pictures
from app.ledger.workload import LedgerWorkload
from container import Container
from demo import EmbeddedServers, Say, embedded_servers, pointed_at
from ports.errors import ConfigurationError
from settings import Settings

if TYPE_CHECKING:
    from adapters.postgres.fault_proxy import FaultProxy

__all__ = [
    "DEFAULT_TIMELINE",
    "MIN_SECONDS",
    "FaultLab",
    "FaultPlan",
    "FaultScript",
    "fault_lab",
    "print_faults",
]

#: Where the picture goes unless ``--timeline`` says otherwise (the current folder).
DEFAULT_TIMELINE: Final = Path("demo-faults-timeline.png")
#: ``--seconds`` below this leaves the steps too short to show anything.
MIN_SECONDS: Final = 4.0
_POLL_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The script's timings in seconds: load before the first step, each fault, the pause after each.

    ``recovery_timeout_s`` bounds each wait for the service to come back (not scaled); the
    latency is added per round trip on the writer's path.
    """

    warm_up_s: float = 4.0
    replica_down_s: float = 3.0
    writer_down_s: float = 2.0
    latency_for_s: float = 6.0
    pause_s: float = 3.0
    latency_round_trip_s: float = 0.02
    recovery_timeout_s: float = 10.0

    @property
    def total_s(self) -> float:
        """The scripted time, waits for recovery aside."""
        faults = self.replica_down_s + self.writer_down_s + self.latency_for_s
        return self.warm_up_s + faults + 3 * self.pause_s

    def scaled_to(self, total_s: float) -> FaultPlan:
        """The same script stretched or shrunk to ``total_s`` of scripted time."""
        factor = total_s / self.total_s
        return replace(
            self,
            warm_up_s=self.warm_up_s * factor,
            replica_down_s=self.replica_down_s * factor,
            writer_down_s=self.writer_down_s * factor,
            latency_for_s=self.latency_for_s * factor,
            pause_s=self.pause_s * factor,
        )


@dataclass(frozen=True, slots=True)
class FaultLab:
    """The servers the script breaks and the proxy in front of the writer."""

    servers: EmbeddedServers
    proxy: FaultProxy


@contextlib.contextmanager
def fault_lab(settings: Settings, *, replicas: int) -> Iterator[tuple[Settings, FaultLab]]:
    """Throwaway servers, a proxy before the writer, and ``settings`` pointed at them.

    Raises ``ConfigurationError`` when a database is configured: the script stops servers, which
    it may only do to the ones it started.
    """
    if settings.database.url is not None:
        raise ConfigurationError(
            "demo --faults stops and restarts the PostgreSQL servers it runs on, so it only runs on the "
            "throwaway servers the demo starts itself; DATABASE_URL (or database.url) names a database "
            "of yours: unset it to run the fault demo"
        )
    if replicas < 1:
        raise ConfigurationError("demo --faults stops a replica: --replicas must be at least 1")
    from adapters.postgres.fault_proxy import FaultProxy

    with (
        embedded_servers(replicas=replicas) as servers,
        FaultProxy(upstream_port=servers.primary.port) as proxy,
    ):
        writer = proxy.dsn(servers.primary.dsn())
        yield pointed_at(settings, writer, [r.dsn() for r in servers.replicas]), FaultLab(servers, proxy)


@dataclass(slots=True)
class Step:
    """One fault: when it began and ended (monotonic), how long the service took to come back."""

    name: str
    began: float
    ended: float = 0.0
    recovery_s: float | None = None
    note: str = ""

    def as_json(self, origin: float) -> dict[str, Any]:
        recovery = None if self.recovery_s is None else round(self.recovery_s, 3)
        return {
            "step": self.name,
            "from_s": round(self.began - origin, 3),
            "to_s": round(self.ended - origin, 3),
            "recovery_s": recovery,
            "rode_through": self.recovery_s is not None,
            "note": self.note,
        }


@dataclass(slots=True)
class FaultScript:
    """The scripted faults of ``demo --faults``, a ``demo.DemoCompanion``."""

    lab: FaultLab
    container: Container
    plan: FaultPlan = field(default_factory=FaultPlan)
    timeline_path: Path = DEFAULT_TIMELINE
    clock: Callable[[], float] = time.monotonic
    calls: list[tuple[str, float, float, str | None]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def observe(self, kind: str, started: float, ended: float, error: str | None) -> None:
        self.calls.append((kind, started, ended, error))

    async def run(self, workload: LedgerWorkload, say: Say) -> None:
        plan = self.plan
        await self._until(lambda: workload.progress.total > 0, timeout_s=60.0)
        say(f"faults: {plan.total_s:.0f} s of scripted faults under load begin in {plan.warm_up_s:.1f} s")
        await asyncio.sleep(plan.warm_up_s)
        await self._replica_stopped(say)
        await asyncio.sleep(plan.pause_s)
        await self._writer_restarted(say)
        await asyncio.sleep(plan.pause_s)
        await self._latency_injected(say)
        await asyncio.sleep(plan.pause_s)

    async def _replica_stopped(self, say: Say) -> None:
        replica, name = self.lab.servers.replicas[0], "replica-1"
        step = self._begin("replica stopped")
        say(f"{name} stopping (pg_ctl stop -m fast): its reads fall back to the writer")
        await asyncio.to_thread(replica.stop, "fast")
        await asyncio.sleep(self.plan.replica_down_s)
        await asyncio.to_thread(replica.start)
        step.ended = self.clock()
        reads = self._reads_on(name)
        step.recovery_s = await self._until(lambda: self._reads_on(name) > reads)
        down = f"{name} back after {step.ended - step.began:.1f} s"
        if step.recovery_s is None:
            step.note = f"no read returned to {name} within {self.plan.recovery_timeout_s:.0f} s"
        else:
            step.note = f"reads returned to it {step.recovery_s:.2f} s after its restart"
        say(f"{down}, {step.note}")

    async def _writer_restarted(self, say: Say) -> None:
        primary, breaker = self.lab.servers.primary, self.container.circuit_breaker()
        opened = breaker.transitions("writer")["opened"]
        step = self._begin("writer restarted")
        say("writer restarting (pg_ctl stop -m fast, then start): writes are refused while it is down")
        await asyncio.to_thread(primary.stop, "fast")
        await asyncio.sleep(self.plan.writer_down_s)
        await asyncio.to_thread(primary.start)
        step.ended = up = self.clock()
        step.recovery_s = await self._until(lambda: self._first_ok("transfer", after=up) is not None)
        opened = breaker.transitions("writer")["opened"] - opened
        if step.recovery_s is not None:
            step.recovery_s = (self._first_ok("transfer", after=up) or up) - up
            step.note = f"transfers succeed again {step.recovery_s:.2f} s after it accepted connections"
        else:
            step.note = f"no transfer succeeded within {self.plan.recovery_timeout_s:.0f} s"
        say(f"writer back after {up - step.began:.1f} s, {step.note} (its circuit opened {opened}x)")

    async def _latency_injected(self, say: Say) -> None:
        latency_s = self.plan.latency_round_trip_s
        step = self._begin("latency injected")
        say(f"latency +{latency_s * 1000:.0f} ms per round trip on the writer's path (fault proxy)")
        self.lab.proxy.set_latency(latency_s)
        try:
            await asyncio.sleep(self.plan.latency_for_s)
        finally:
            self.lab.proxy.set_latency(0.0)
        step.ended = off = self.clock()
        before = [c[2] - c[1] for c in self._transfers(step.began - self.plan.pause_s, step.began, ok=True)]
        ok = [c[2] - c[1] for c in self._transfers(step.began, off, ok=True)]
        refused = Counter(c[3] for c in self._transfers(step.began, off, ok=False))
        recovered = await self._until(lambda: self._first_ok("transfer", after=off) is not None)
        step.recovery_s = None if not ok or recovered is None else recovered
        step.note = (
            f"{len(ok)} transfers ok during it, p99 {_p99_ms(ok)} against {_p99_ms(before)} before; "
            f"failed: {dict(refused) or 'none'}"
        )
        say(f"latency lifted after {off - step.began:.1f} s: {step.note}")

    async def finish(self, acknowledged: Sequence[str]) -> dict[str, Any]:
        keys = sorted(set(acknowledged))
        stored = await _stored_once(self.lab.servers.primary.dsn(), keys)
        origin = min([c[1] for c in self.calls] + [s.began for s in self.steps], default=0.0)
        complete = [s.name for s in self.steps] == ["replica stopped", "writer restarted", "latency injected"]
        return {
            "steps": [s.as_json(origin) for s in self.steps],
            "acknowledged_transfers": {"acknowledged": len(keys), "stored_once": stored},
            "timeline": self._draw(),
            "passed": complete and all(s.recovery_s is not None for s in self.steps) and stored == len(keys),
        }

    def _draw(self) -> str | None:
        if not pictures.available() or not self.calls:
            return None
        writer = next((s for s in self.steps if s.name == "writer restarted"), None)
        recovered = None if writer is None or writer.recovery_s is None else writer.ended + writer.recovery_s
        timeline = pictures.Timeline(
            calls=[(started, ended, error) for _, started, ended, error in self.calls],
            faults=[(s.began, s.ended) for s in self.steps],
            recovered_at=recovered,
        )
        title = "demo --faults: replica stopped, writer restarted, latency"
        return str(pictures.timeline_chart(self.timeline_path, title, timeline).absolute())

    def _begin(self, name: str) -> Step:
        step = Step(name, self.clock())
        self.steps.append(step)
        return step

    def _reads_on(self, target: str) -> int:
        return self.container.connection_provider().stats().reads_by_target.get(target, 0)

    def _transfers(
        self, since: float, until: float, *, ok: bool
    ) -> list[tuple[str, float, float, str | None]]:
        """The transfers that ended in ``[since, until]``, those that succeeded or those that failed."""
        return [
            c for c in self.calls if c[0] == "transfer" and since <= c[2] <= until and (c[3] is None) is ok
        ]

    def _first_ok(self, kind: str, *, after: float) -> float | None:
        return next((c[2] for c in self.calls if c[0] == kind and c[3] is None and c[2] > after), None)

    async def _until(self, condition: Callable[[], bool], *, timeout_s: float | None = None) -> float | None:
        """Seconds until ``condition`` held, polled; ``None`` when it did not within the timeout."""
        started = self.clock()
        deadline = started + (self.plan.recovery_timeout_s if timeout_s is None else timeout_s)
        while not condition():
            if self.clock() >= deadline:
                return None
            await asyncio.sleep(_POLL_S)
        return self.clock() - started


async def _stored_once(dsn: str, keys: Sequence[str]) -> int:
    """How many of the transfers ``keys`` name are in the ledger with both their entries."""
    connection = await asyncpg.connect(dsn)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM transfers t WHERE t.idempotency_key = ANY($1::text[]) "
            "AND (SELECT count(*) FROM entries e WHERE e.transfer_id = t.id) = 2",
            list(keys),
        )
    finally:
        await connection.close()
    return int(found)


def _p99_ms(durations: list[float]) -> str:
    return f"{pictures.p99(durations) * 1000:.0f} ms" if durations else "-"


def print_faults(faults: dict[str, Any]) -> None:
    """The fault part of the summary, after ``demo.print_summary``'s lines."""
    for step in faults["steps"]:
        verdict = "rode through" if step["rode_through"] else "DID NOT RECOVER"
        window = f"{step['from_s']:.1f}-{step['to_s']:.1f} s"
        print(f"fault       {step['step']:<17} {window:<12} {verdict}: {step['note']}")
    acks = faults["acknowledged_transfers"]
    verdict = "PASSED" if acks["stored_once"] == acks["acknowledged"] else "FAILED"
    print(
        f"acked       {acks['acknowledged']} transfers acknowledged, {acks['stored_once']} stored  {verdict}"
    )
    drawn = faults["timeline"] or "not drawn: matplotlib is missing (pip install 'alchemy-hex[pictures]')"
    print(f"timeline    {drawn}")
