"""Validated settings: one root class, a nested group per concern, presets per environment.

Sources, strongest first: keyword arguments; ``HEX_``-prefixed environment variables with ``__``
nesting (``HEX_DATABASE__POOL_SIZE=20``); the conventional ``DATABASE_URL`` and
``DATABASE_REPLICA_URLS`` (comma-separated); the preset of ``environment`` (``dev``, ``test``,
``prod``); the field defaults. Nothing is read at import time: :func:`load_settings` reads.
Passwords stay :class:`SecretStr` until an adapter connects, and no error message prints one.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from ports.errors import ConfigurationError

Environment = Literal["dev", "test", "prod"]
_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})
#: Query parameters of a DSN that hold a secret (libpq's names: the password and the key's passphrase).
_QUERY_SECRETS: Final = frozenset({"password", "sslpassword"})


def _is_query_secret(pair: str) -> bool:
    return unquote_plus(pair.partition("=")[0]).lower() in _QUERY_SECRETS


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password (user-info or query string) replaced by ``***``; safe for logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    # Replaced where they are written (the first "//...@" and the first "?..."), the rest untouched.
    masked = dsn
    if parts.password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        masked = masked.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:***@{hostinfo}", 1)
    pairs = parts.query.split("&")
    if any(_is_query_secret(pair) for pair in pairs):
        query = "&".join(
            f"{pair.partition('=')[0]}=***" if _is_query_secret(pair) else pair for pair in pairs
        )
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def _dsn_passwords(dsn: str) -> set[str]:
    """The secrets in ``dsn`` (user-info password, query ``password``), as written and decoded."""
    parts = urlsplit(dsn)
    written = [pair.partition("=")[2] for pair in parts.query.split("&") if _is_query_secret(pair)]
    decoded = [unquote_plus(value) for value in written]  # how a query string is decoded
    if parts.password:
        written.append(parts.password)
        decoded.append(unquote(parts.password))
    return {secret for secret in (*written, *decoded) if secret}


def _split_dsn(dsn: str) -> SplitResult | None:
    """``dsn`` split, or ``None`` if it cannot be (outside ``except``: urllib's errors quote the DSN)."""
    try:
        parts = urlsplit(dsn)
        if "," not in parts.netloc:  # libpq's multi-host form has no single port to parse
            parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError:
        return None
    return parts


def _host_part_ends_early(parts: SplitResult) -> bool:
    # A "/", "?" or "#" in a password ends the host part there (a password starting with digits
    # even reads as a port), and "...@host" turns up in the path, a parameter name or the fragment:
    # the rest of the password would be taken for a database name or a parameter, and shown.
    names = (pair.partition("=")[0] for pair in parts.query.split("&"))
    return bool(parts.fragment) or "@" in parts.path or any("@" in name for name in names)


def _check_dsn(value: SecretStr) -> SecretStr:
    parts = _split_dsn(value.get_secret_value())
    if parts is None:
        raise ValueError("is not a valid URL (postgresql://user:password@host:port/database)")
    if parts.scheme not in _SCHEMES:
        # Not quoted: whatever stands before the first ":" may be part of a password.
        raise ValueError("must use the postgresql:// scheme (or postgres://, postgresql+asyncpg://)")
    if _host_part_ends_early(parts):
        raise ValueError("has an '@' after its host; percent-encode '/', '?', '#' and '@' in a password")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("must name a host")
    return value


#: A PostgreSQL DSN kept secret: it may carry the password.
PostgresDsn = Annotated[SecretStr, AfterValidator(_check_dsn)]


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSettings(_Group):
    """Where the writer and replicas are, and how connections to them behave."""

    url: PostgresDsn | None = None
    replica_urls: tuple[PostgresDsn, ...] = ()
    pool_size: int = Field(default=10, ge=1, le=1000)
    max_overflow: int = Field(default=5, ge=0, le=1000)
    acquire_timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    statement_timeout_s: float = Field(default=30.0, gt=0)
    idle_in_transaction_timeout_s: float = Field(default=60.0, gt=0)
    lock_timeout_s: float = Field(default=10.0, gt=0)
    max_lifetime_s: float = Field(default=1800.0, gt=0)
    pre_ping: bool = True
    isolation_level: Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] = "READ COMMITTED"
    replica_eject_s: float = Field(default=5.0, gt=0)
    teardown_timeout_s: float = Field(default=10.0, gt=0)
    max_waiting: int = Field(default=1000, ge=0)
    lifetime_jitter: float = Field(default=0.1, ge=0, le=0.5)
    pgbouncer: bool = False
    leak_detection_threshold_s: float | None = Field(default=None, gt=0)
    reclaim_after_s: float | None = Field(default=None, gt=0)
    keepalive_s: float | None = Field(default=60.0, gt=0)
    idle_timeout_s: float | None = Field(default=600.0, gt=0)
    min_idle: int | None = Field(default=None, ge=0)
    stats_log_interval_s: float | None = Field(default=60.0, gt=0)
    application_name: str = Field(default="alchemy-hex", max_length=63)


_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})


def _check_redis_url(value: SecretStr) -> SecretStr:
    try:
        parts = urlsplit(value.get_secret_value())
        parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError:
        raise ValueError("is not a valid URL (redis://:password@host:port/db)") from None
    if parts.scheme not in _REDIS_SCHEMES:
        scheme = parts.scheme or "none"
        raise ValueError(f"must use the redis://, rediss:// or unix:// scheme, not {scheme!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("must name a host")
    return value


#: A Redis URL kept secret: it may carry the password.
RedisUrl = Annotated[SecretStr, AfterValidator(_check_redis_url)]


class RedisSettings(_Group):
    """The Redis that shares policies between instances (only when a policy asks for it).

    ``url`` may carry the password (``redis://:password@host:6379/0``); ``tls_mode`` ``require``
    encrypts, ``verify-ca`` checks the certificate against ``tls_ca_file`` (the system store when
    unset), ``verify-full`` also the host name. Every call has ``call_timeout_s`` end to end and is
    never retried; ``breaker_failures`` failures in a row stop calls for ``breaker_open_s``.
    """

    url: RedisUrl | None = None
    tls_mode: Literal["disable", "require", "verify-ca", "verify-full"] = "disable"
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_key_password: SecretStr | None = None
    call_timeout_s: float = Field(default=0.02, gt=0, le=10)
    connect_timeout_s: float = Field(default=0.02, gt=0, le=10)
    max_connections: int = Field(default=32, ge=1, le=10_000)
    key_prefix: str = Field(default="hex:", max_length=200)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_s: float = Field(default=0.5, gt=0)

    @model_validator(mode="after")
    def _tls_files_fit_the_mode(self) -> Self:
        if self.tls_ca_file is not None and self.tls_mode not in ("verify-ca", "verify-full"):
            raise ValueError("tls_ca_file is only checked by tls_mode verify-ca or verify-full")
        if (self.tls_cert_file or self.tls_key_file) and self.tls_mode == "disable":
            raise ValueError("a client certificate needs tls_mode require, verify-ca or verify-full")
        return self


class RateLimiterSettings(_Group):
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


class CircuitBreakerSettings(_Group):
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

    @model_validator(mode="after")
    def _minimum_fits_the_window(self) -> Self:
        if self.window == "count" and self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls must be <= window_size for a count window, or it never opens")
        return self


class ReplicaSettings(_Group):
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


class RetrySettings(_Group):
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


class ConcurrencySettings(_Group):
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


class LoggingSettings(_Group):
    """How log lines look."""

    format: Literal["json", "console"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


class TlsSettings(_Group):
    """TLS to the database (``tls``; ``replica_tls`` overrides it for the replicas).

    ``disable``: plain text. ``prefer`` (libpq's default): TLS when the server offers it, with no
    check. ``require``: TLS or fail, any certificate. ``verify-ca``: a certificate signed by
    ``ca_file`` (the system's trust store when unset). ``verify-full``: that, for the host name
    connected to. A client certificate (``cert_file``, ``key_file``, ``key_password``) needs
    ``require`` or stronger.
    """

    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None

    @model_validator(mode="after")
    def _files_fit_the_mode(self) -> Self:
        if self.ca_file is not None and self.mode not in ("verify-ca", "verify-full"):
            raise ValueError("ca_file is only checked by mode verify-ca or verify-full")
        if (self.cert_file or self.key_file) and self.mode in ("disable", "prefer"):
            raise ValueError("a client certificate needs mode require, verify-ca or verify-full")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class CredentialSettings(_Group):
    """Where a role's password comes from (``credentials``; ``replica_credentials`` for replicas).

    ``dsn``: the password in each DSN (or ``PGPASSWORD``, ``~/.pgpass``). ``static``: ``password``.
    ``file``: ``password_file``, read again for every new connection, so a rotated secret is picked
    up without a restart. ``command``: the token that ``command`` (split like a shell would, run
    without one) prints, reused for ``token_ttl_s``.
    """

    source: Literal["dsn", "static", "file", "command"] = "dsn"
    password: SecretStr | None = None
    password_file: Path | None = None
    command: str = ""
    command_timeout_s: float = Field(default=5.0, gt=0)
    token_ttl_s: float = Field(default=300.0, ge=0)

    @property
    def argv(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.command))

    @model_validator(mode="after")
    def _source_is_complete(self) -> Self:
        try:
            given = {"static": self.password, "file": self.password_file, "command": self.argv or None}
        except ValueError:
            raise ValueError("command has unbalanced quotes") from None
        if self.source in given and given[self.source] is None:
            needed = {"static": "password", "file": "password_file", "command": "command"}[self.source]
            raise ValueError(f"source {self.source!r} needs {needed}")
        return self


class MigrationSettings(_Group):
    """The role that owns the schema and runs migrations; the service's own role when ``url`` is unset."""

    url: PostgresDsn | None = None


PRESETS: Final[Mapping[Environment, Mapping[str, Mapping[str, object]]]] = {
    "dev": {"logging": {"format": "console"}},
    "test": {
        "logging": {"format": "console", "level": "warning"},
        "retry": {"wait": False},
        "database": {"acquire_timeout_s": 2.0, "connect_timeout_s": 2.0, "replica_eject_s": 1.0},
        "circuit_breaker": {"recovery_time_s": 0.5},
        "replicas": {"probe_interval_s": 0.2, "probe_timeout_s": 0.5},
    },
    "prod": {
        "logging": {"format": "json"},
        "rate_limiter": {"implementation": "token_bucket"},
        "database": {"pool_size": 20, "max_overflow": 10},
    },
}


class _ConventionalUrls(PydanticBaseSettingsSource):
    """``DATABASE_URL`` and ``DATABASE_REPLICA_URLS``, as most platforms name them."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        database: dict[str, Any] = {}
        if url := os.environ.get("DATABASE_URL"):
            database["url"] = url
        if replicas := os.environ.get("DATABASE_REPLICA_URLS"):
            database["replica_urls"] = [part.strip() for part in replicas.split(",") if part.strip()]
        return {"database": database} if database else {}


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Settings(BaseSettings):
    """Every setting of alchemy-hex; frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix="HEX_", env_nested_delimiter="__", frozen=True, extra="forbid", case_sensitive=False
    )

    environment: Environment = "dev"
    database: DatabaseSettings = DatabaseSettings()
    rate_limiter: RateLimiterSettings = RateLimiterSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    replicas: ReplicaSettings = ReplicaSettings()
    retry: RetrySettings = RetrySettings()
    concurrency: ConcurrencySettings = ConcurrencySettings()
    logging: LoggingSettings = LoggingSettings()
    tls: TlsSettings = TlsSettings()
    replica_tls: TlsSettings | None = None
    credentials: CredentialSettings = CredentialSettings()
    replica_credentials: CredentialSettings | None = None
    migration: MigrationSettings = MigrationSettings()
    redis: RedisSettings = RedisSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConventionalUrls(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        preset = PRESETS.get(data.get("environment", "dev"))
        # An unknown environment is left for the Literal field to reject with its own message.
        return data if preset is None else _deep_merge(preset, data)

    @model_validator(mode="after")
    def _check_across_groups(self) -> Settings:
        # Checks that span groups live here too, so every configuration error comes from
        # load_settings() at start-up, none from the container later.
        weights, urls = self.replicas.weights, self.database.replica_urls
        if weights and len(weights) != len(urls):
            raise ValueError(
                f"replicas.weights: {len(weights)} given for {len(urls)} database.replica_urls; "
                "give one per replica, in the same order, or none"
            )
        self.concurrency_bounds()
        return self

    def concurrency_bounds(self) -> tuple[int, int, int]:
        """The admission limit's ``(min, initial, max)``, the pool's capacity filling in the defaults."""
        group, database = self.concurrency, self.database
        max_limit = (
            group.max_limit if group.max_limit is not None else database.pool_size + database.max_overflow
        )
        initial_limit = group.initial_limit if group.initial_limit is not None else max_limit
        if not group.min_limit <= initial_limit <= max_limit:
            raise ValueError(
                "concurrency: needs min_limit <= initial_limit <= max_limit "
                f"(here {group.min_limit}, {initial_limit}, {max_limit}; max_limit defaults to the pool's "
                "database.pool_size + database.max_overflow)"
            )
        return group.min_limit, initial_limit, max_limit

    @property
    def uses_redis(self) -> bool:
        """Whether a policy the settings select shares its state through Redis."""
        return self.rate_limiter.implementation == "redis" or self.circuit_breaker.implementation == (
            "shared_redis"
        )

    @model_validator(mode="after")
    def _redis_is_configured_when_used(self) -> Self:
        if self.uses_redis and self.redis.url is None:
            raise ValueError(
                "redis.url: not set, and rate_limiter.implementation=redis or "
                "circuit_breaker.implementation=shared_redis needs it (set HEX_REDIS__URL)"
            )
        return self

    def secret_values(self) -> tuple[str, ...]:
        """Every secret configured, so a log processor can scrub it wherever it shows up.

        Secrets read later (a password file, a token) are not known here; the credential
        providers report those themselves.
        """
        urls = [self.database.url, *self.database.replica_urls, self.migration.url, self.redis.url]
        # A DSN holds its passwords percent-encoded; a driver message may echo either form.
        passwords = [_dsn_passwords(url.get_secret_value()) for url in urls if url is not None]
        tls = [group.key_password for group in (self.tls, self.replica_tls) if group is not None]
        tls.append(self.redis.tls_key_password)
        static = [group.password for group in (self.credentials, self.replica_credentials) if group]
        others = [secret.get_secret_value() for secret in (*tls, *static) if secret is not None]
        return tuple(sorted({*others, *(p for found in passwords for p in found)} - {""}))


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, or raise ``ConfigurationError`` naming every bad field.

    The message never includes the rejected values, since a rejected DSN may hold a password,
    and neither does the error's chain: pydantic's errors quote the input, so they are not kept
    as its ``__context__`` (which ``raise ... from None`` would still set) or ``__cause__``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
    except SettingsError as exc:
        # pydantic-settings names the field in its message; its cause may quote the value.
        problems = str(exc).split(":", 1)[0]
    raise ConfigurationError(f"invalid settings: {problems}")
