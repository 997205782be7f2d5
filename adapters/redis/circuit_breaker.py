"""Circuit breakers that stay local but tell each other, through Redis, that a target is down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

import structlog

from adapters.memory.circuit_breaker import InMemoryCircuitBreaker
from adapters.redis._client import GuardedRedis, RedisUnavailableError
from adapters.redis.circuit_state import Observation, Phase, RedisCircuitState
from ports.circuit_breaker import BreakerState, CircuitBreaker
from ports.errors import CircuitOpenError, DeadlineExceededError, InfrastructureError

log = structlog.get_logger(__name__)

_Event = Literal["vote", "reopen", "close"]
# How many outcomes of trial calls or openings may wait for the refresher; beyond that the oldest
# are dropped (the next refresh reads the truth anyway).
_MAX_PENDING: Final = 1024


@dataclass(slots=True)
class _View:
    """What this instance last learnt from Redis about one target (times on the local clock)."""

    phase: Phase = Phase.LOCAL
    open_until: float = 0.0
    probe_holder: bool = False
    trials_in_flight: int = 0
    opened_seen: int = 0  # the local breaker's "opened" count already voted for
    version: int = 0  # bumped on every local change, so a reading taken before it is not applied


class RedisSharedCircuitBreaker(CircuitBreaker):
    """The in-memory breaker ``inner``, plus an OPEN signal shared by every instance through Redis.

    Counting and the decision to open stay local (``inner``). When ``inner`` opens a target's
    circuit, this instance votes in Redis; once ``quorum`` distinct instances voted within
    ``quorum_window_s``, an OPEN flag is set for ``open_s``, and every instance refuses calls to
    the target at once (``CircuitOpenError``), whatever its own breaker says. With ``quorum=1``
    the first instance to open opens everyone; with more, a fault only one instance sees (its own
    network path, its own CPU) stays its own.

    A background task reads the flags of the targets in use every ``refresh_interval_s`` (and sends
    the votes and probe results as they happen), so a guarded call never waits for Redis. Once the
    flag expires, exactly one instance, the holder of a probe lock (``probe_ttl_s``), sends up to
    ``trial_calls`` trials; the others refuse until it reports. A failed trial sets the flag again,
    a successful one ends the episode and every instance goes back to its local breaker. If the
    prober vanishes, the lock passes on when it expires; if the whole episode is abandoned, it ends
    ``10 * probe_ttl_s`` after the flag. While Redis is unreachable (or its breaker is open) the
    signal is ignored: each breaker behaves exactly as ``inner`` alone. Safe to share between the
    tasks of one event loop; the refresher starts with the first guarded call in a running loop and
    ends with ``GuardedRedis.aclose``.
    """

    def __init__(
        self,
        *,
        inner: InMemoryCircuitBreaker,
        redis: GuardedRedis,
        open_s: float,
        key_prefix: str = "hex:",
        quorum: int = 2,
        quorum_window_s: float = 10.0,
        refresh_interval_s: float = 0.25,
        probe_ttl_s: float = 1.0,
        trial_calls: int = 1,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in [
            ("open_s", open_s),
            ("quorum_window_s", quorum_window_s),
            ("refresh_interval_s", refresh_interval_s),
            ("probe_ttl_s", probe_ttl_s),
        ]:
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if quorum < 1 or trial_calls < 1:
            raise ValueError(f"quorum and trial_calls must be >= 1, got {quorum!r} and {trial_calls!r}")
        self._inner = inner
        self._redis = redis
        instance = instance or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._state = RedisCircuitState(redis, key_prefix=key_prefix, instance=instance)
        self._open_s = open_s
        self._quorum = quorum
        self._quorum_window_s = quorum_window_s
        self._refresh_interval_s = refresh_interval_s
        self._probe_ttl_s = probe_ttl_s
        self._episode_s = open_s + 10 * probe_ttl_s
        self._trial_calls = trial_calls
        self._clock = clock
        self._views: dict[str, _View] = {}
        self._pending: deque[tuple[_Event, str]] = deque(maxlen=_MAX_PENDING)
        self._wake = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._redis_ok = False
        self.shared_refusals = 0

    @property
    def instance(self) -> str:
        """This instance's name in the votes and the probe lock."""
        return self._state.instance

    def guard(self, target: str) -> AbstractContextManager[None]:
        """Refuse at once if the cluster holds ``target`` open; else the local breaker's guard."""
        if self._refresher is None:
            self._start()
        view = self._views.get(target)
        if view is None:
            view = self._views[target] = _View()
            self._wake.set()  # read the new target's flag now rather than at the next interval
        return _SharedGuard(self, target, view)

    def state(self, target: str) -> BreakerState:
        """``OPEN`` while the cluster holds ``target`` open for this instance, else ``inner``'s state."""
        view = self._views.get(target)
        if view is not None and self._redis_ok and view.phase is not Phase.LOCAL:
            if view.probe_holder and self._clock() >= view.open_until:
                return BreakerState.HALF_OPEN
            return BreakerState.OPEN
        return self._inner.state(target)

    def record_stuck(self, target: str, calls: int) -> None:
        """Count stuck calls in the local breaker; if that opens it, vote as after any opening."""
        self._inner.record_stuck(target, calls)
        view = self._views.get(target)
        if view is not None:
            self._vote_if_opened(target, view)

    def recovered(self, target: str) -> None:
        """A probe reached ``target``: the local circuit half-opens, and a shared episode ends.

        Ending it is what a successful trial does (``close`` in Redis, refused there if another
        instance holds the probe lock or reopened the flag meanwhile).
        """
        self._inner.recovered(target)
        view = self._views.get(target)
        if view is not None and self._redis_ok and view.phase is not Phase.LOCAL:
            view.version += 1
            view.phase, view.probe_holder = Phase.LOCAL, False
            self._send("close", target)

    def transitions(self, target: str) -> Mapping[str, int]:
        """The local breaker's transitions of ``target`` (shared refusals are in ``shared_refusals``)."""
        return self._inner.transitions(target)

    def _admit(self, target: str, view: _View) -> bool:
        """Whether this call is a shared trial; raises ``CircuitOpenError`` when the cluster refuses."""
        if view.phase is Phase.LOCAL or not self._redis_ok:
            return False
        now = self._clock()
        if now < view.open_until:
            self.shared_refusals += 1
            raise CircuitOpenError(target, view.open_until - now)
        if view.probe_holder and view.trials_in_flight < self._trial_calls:
            view.trials_in_flight += 1
            return True
        self.shared_refusals += 1
        raise CircuitOpenError(target, self._refresh_interval_s)

    def _record(self, target: str, view: _View, *, trial: bool, error: BaseException | None) -> None:
        if trial:
            view.trials_in_flight -= 1
            if error is not None and not isinstance(error, Exception):
                return  # cancelled: nothing learnt, the slot is free again
            if isinstance(error, DeadlineExceededError) and not error.server_unresponsive:
                return  # the caller's budget ran out: nothing learnt either
            view.version += 1
            if isinstance(error, InfrastructureError | DeadlineExceededError):
                view.phase, view.probe_holder = Phase.OPEN, False
                view.open_until = self._clock() + self._open_s
                self._send("reopen", target)
            else:
                view.phase, view.probe_holder = Phase.LOCAL, False
                self._send("close", target)
            return
        self._vote_if_opened(target, view)

    def _vote_if_opened(self, target: str, view: _View) -> None:
        if self._inner.state(target) is BreakerState.OPEN:
            opened = self._inner.transitions(target)["opened"]
            if opened > view.opened_seen:
                view.opened_seen = opened
                self._send("vote", target)

    def _send(self, event: _Event, target: str) -> None:
        self._pending.append((event, target))
        self._wake.set()

    def _start(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet (a synchronous caller): the signal waits for the first async one
        self._refresher = self._redis.spawn(self._refresh_forever(), name="circuit-state-refresher")

    async def _refresh_forever(self) -> None:
        while not self._redis.closing:
            self._wake.clear()
            try:
                await self._flush()
                for target, view in list(self._views.items()):
                    await self._observe(target, view)
                self._set_redis_ok(True, None)
            except (RedisUnavailableError, CircuitOpenError) as exc:
                self._set_redis_ok(False, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_interval_s):
                    await self._wake.wait()

    async def _flush(self) -> None:
        while self._pending:
            event, target = self._pending[0]
            view = self._views[target]
            if event == "vote":
                open_s = await self._state.vote_open(
                    target,
                    quorum=self._quorum,
                    window_s=self._quorum_window_s,
                    open_s=self._open_s,
                    episode_s=self._episode_s,
                )
                if open_s > 0:
                    self._apply(target, view, Observation(Phase.OPEN, open_s=open_s), view.version)
                log.info("circuit.shared_vote", target=target, instance=self.instance, opened=open_s > 0)
            elif event == "reopen":
                await self._state.reopen(target, open_s=self._open_s, episode_s=self._episode_s)
                log.warning("circuit.shared_probe_failed", target=target, instance=self.instance)
            else:
                closed = await self._state.close(target)
                log.info("circuit.shared_closed", target=target, instance=self.instance, closed=closed)
            self._pending.popleft()  # only once Redis has it: a failed send is retried next round

    async def _observe(self, target: str, view: _View) -> None:
        version = view.version
        observation = await self._state.observe(target, probe_ttl_s=self._probe_ttl_s)
        self._apply(target, view, observation, version)

    def _apply(self, target: str, view: _View, observation: Observation, version: int) -> None:
        if view.version != version:
            return  # a trial ended while Redis was asked: the next reading includes its report
        if observation.phase is not view.phase:
            log.info("circuit.shared_phase", target=target, phase=observation.phase.value)
        view.phase = observation.phase
        view.open_until = self._clock() + observation.open_s
        view.probe_holder = observation.probe_holder

    def _set_redis_ok(self, ok: bool, error: Exception | None) -> None:
        if ok == self._redis_ok:
            return
        self._redis_ok = ok
        if ok:
            log.info("circuit.shared_state_available")
            return
        for view in self._views.values():
            view.phase, view.probe_holder, view.version = Phase.LOCAL, False, view.version + 1
        log.warning("circuit.shared_state_unavailable", error=type(error).__name__, detail=str(error))


class _SharedGuard:
    """One guarded call: the shared check, then the local breaker's own guard."""

    __slots__ = ("_breaker", "_inner", "_target", "_trial", "_view")

    def __init__(self, breaker: RedisSharedCircuitBreaker, target: str, view: _View) -> None:
        self._breaker = breaker
        self._target = target
        self._view = view

    def __enter__(self) -> None:
        self._trial = self._breaker._admit(self._target, self._view)
        self._inner = self._breaker._inner.guard(self._target)
        try:
            self._inner.__enter__()
        except BaseException:
            if self._trial:
                self._view.trials_in_flight -= 1
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._inner.__exit__(exc_type, exc, tb)
        self._breaker._record(self._target, self._view, trial=self._trial, error=exc)
