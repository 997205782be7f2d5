"""The policies in front of the database: rate limiter, circuit breaker, retries, admission limit."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from settings.group import SettingsGroup


class RateLimiterSettings(SettingsGroup):
    """Which rate limiter guards the database, and its budget.

    ``redis`` shares the budget of each key between every instance using the same Redis and key
    prefix; when Redis fails, ``failure_mode`` decides: ``open`` admits (counted), ``closed``
    refuses, ``local`` falls back to an in-memory token bucket with ``local_share`` of the rate and
    burst (set it to 1 / the number of instances).
    """

    implementation: Literal["unlimited", "token_bucket", "sliding_window", "redis"] = "unlimited"
    rate_per_s: float = Field(default=1000.0, gt=0)
    burst: float = Field(default=100.0, ge=1)
    max_wait_s: float = Field(default=0.5, ge=0)
    #: The sliding window's length: any ``window_s`` admits at most ``rate_per_s * window_s``.
    window_s: float = Field(default=1.0, gt=0)
    failure_mode: Literal["open", "closed", "local"] = "open"
    local_share: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _window_holds_one_call(self) -> Self:
        if self.implementation == "sliding_window" and self.rate_per_s * self.window_s < 1:
            raise ValueError("rate_per_s * window_s must be >= 1 so that a window admits one call")
        return self


class CircuitBreakerSettings(SettingsGroup):
    """Which circuit breaker protects each target."""

    #: ``shared_redis``: the ``in_memory`` breaker, plus an OPEN flag shared through Redis.
    implementation: Literal["always_closed", "in_memory", "shared_redis"] = "in_memory"
    #: ``count``: the last ``window_size`` calls; ``time``: the calls of the last ``window_size`` seconds.
    window: Literal["count", "time"] = "count"
    window_size: int = Field(default=20, ge=1)
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    slow_call_rate_threshold: float = Field(default=1.0, gt=0, le=1)
    slow_call_duration_s: float = Field(default=5.0, gt=0)
    recovery_time_s: float = Field(default=5.0, gt=0)
    half_open_max_calls: int = Field(default=1, ge=1)
    #: ``shared_redis``: how many instances must have opened within ``shared_quorum_window_s``.
    shared_quorum: int = Field(default=2, ge=1)
    shared_quorum_window_s: float = Field(default=10.0, gt=0)
    #: ``shared_redis``: how often each instance reads the flags (never on a call's path).
    shared_refresh_s: float = Field(default=0.25, gt=0)
    #: ``shared_redis``: how long the one prober holds its lock once the flag has expired.
    shared_probe_ttl_s: float = Field(default=1.0, gt=0)
    #: While a circuit is open, probe its target (a fresh connection, ``SELECT 1``) this long after
    #: it opened, then with the interval doubling up to ``probe_max_interval_s`` (never beyond
    #: ``recovery_time_s``); the first success half-opens the circuit. ``None``: no probes.
    probe_interval_s: float | None = Field(default=0.05, gt=0)
    probe_max_interval_s: float = Field(default=0.25, gt=0)

    @model_validator(mode="after")
    def _minimum_fits_the_window(self) -> Self:
        if self.window == "count" and self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls must be <= window_size for a count window, or it never opens")
        if self.probe_interval_s is not None and self.probe_interval_s > self.probe_max_interval_s:
            raise ValueError("probe_interval_s must be <= probe_max_interval_s")
        return self


class ReplicaSettings(SettingsGroup):
    """How reads choose a replica, how replicas are watched, and what happens when none is usable.

    ``weights`` give the replicas of ``database.replica_urls``, in order, their shares of reads
    under ``weighted`` (empty: 1 each; 0 drains one). A background probe every
    ``probe_interval_s`` (``None``: none) checks each replica within ``probe_timeout_s`` and
    measures its replay lag; ``lag_aware`` skips replicas lagging more than ``max_lag_s``. A read
    given a causal token waits up to ``causal_wait_s`` for a replica to replay it, else the writer
    serves it.
    """

    strategy: Literal["writer_only", "round_robin", "random", "weighted", "least_in_flight", "lag_aware"] = (
        "round_robin"
    )
    fallback_to_writer: bool = True
    weights: tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...] = ()
    max_lag_s: float = Field(default=1.0, gt=0)
    probe_interval_s: float | None = Field(default=1.0, gt=0)
    probe_timeout_s: float = Field(default=1.0, gt=0)
    causal_wait_s: float = Field(default=1.0, ge=0)


class RetrySettings(SettingsGroup):
    """Retries of safe-to-repeat work: acquisition and server-rolled-back transactions."""

    max_attempts: int = Field(default=4, ge=1, le=100)
    initial_backoff_s: float = Field(default=0.05, ge=0)
    max_backoff_s: float = Field(default=2.0, ge=0)
    max_total_s: float = Field(default=10.0, gt=0)
    wait: bool = True
    #: ``token``: retries may add ``budget_ratio`` to the request rate, plus a floor; ``unlimited``: off.
    budget: Literal["unlimited", "token"] = "token"
    budget_ratio: float = Field(default=0.2, ge=0, le=10)
    budget_min_retries_per_s: float = Field(default=10.0, ge=0)
    budget_ttl_s: float = Field(default=10.0, gt=0)


class ConcurrencySettings(SettingsGroup):
    """The admission limit per target: fixed, or adapting to the database's latency.

    ``max_limit`` defaults to the pool's capacity (``pool_size + max_overflow``) and
    ``initial_limit`` to ``max_limit``; ``fixed`` holds ``initial_limit``, the others start there.
    The container checks ``min_limit <= initial_limit <= max_limit`` once the defaults are known.
    """

    implementation: Literal["fixed", "aimd", "gradient"] = "fixed"
    min_limit: int = Field(default=1, ge=1)
    initial_limit: int | None = Field(default=None, ge=1)
    max_limit: int | None = Field(default=None, ge=1)
    #: AIMD: a sample slower than this is a congestion signal, as is a dropped call.
    slow_latency_s: float = Field(default=1.0, gt=0)
    #: AIMD: what the limit is multiplied by on congestion.
    backoff_ratio: float = Field(default=0.9, ge=0.5, lt=1)
    #: Gradient: how much slower than the long-term latency a sample may be before the limit falls.
    rtt_tolerance: float = Field(default=1.5, ge=1)
    #: Gradient: how far each sample moves the limit towards its new estimate.
    smoothing: float = Field(default=0.2, gt=0, le=1)
    #: Gradient: how many samples the long-term latency average spans.
    long_window: int = Field(default=600, ge=1)
    #: Gradient: how many calls may queue on top of the estimated no-queue limit.
    queue_size: int = Field(default=4, ge=0)
