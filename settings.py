"""Validated settings: one root class, a nested group per concern, presets per environment.

Sources, strongest first: keyword arguments; ``HEX_``-prefixed environment variables with ``__``
nesting (``HEX_DATABASE__POOL_SIZE=20``); the conventional ``DATABASE_URL`` and
``DATABASE_REPLICA_URLS`` (comma-separated); the preset of ``environment`` (``dev``, ``test``,
``prod``); the field defaults. Nothing is read at import time: :func:`load_settings` reads.
Passwords stay :class:`SecretStr` until an adapter connects, and no error message prints one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

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


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``; safe for logs and messages."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    if parts.password is None:
        return dsn
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _check_dsn(value: SecretStr) -> SecretStr:
    try:
        parts = urlsplit(value.get_secret_value())
        if "," not in parts.netloc:  # libpq's multi-host form has no single port to parse
            parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError:
        # The message of urlsplit may quote the DSN, so it is not chained into ours.
        raise ValueError("is not a valid URL (postgresql://user:password@host:port/database)") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"must use the postgresql:// scheme, not {parts.scheme or 'none'!r}")
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
    stats_log_interval_s: float | None = Field(default=60.0, gt=0)
    application_name: str = Field(default="alchemy-hex", max_length=63)


class RateLimiterSettings(_Group):
    """Which rate limiter guards the database, and its budget."""

    implementation: Literal["unlimited", "token_bucket"] = "unlimited"
    rate_per_s: float = Field(default=1000.0, gt=0)
    burst: float = Field(default=100.0, ge=1)
    max_wait_s: float = Field(default=0.5, ge=0)


class CircuitBreakerSettings(_Group):
    """Which circuit breaker protects each target."""

    implementation: Literal["always_closed", "in_memory"] = "in_memory"
    failure_threshold: int = Field(default=5, ge=1)
    recovery_time_s: float = Field(default=5.0, gt=0)
    half_open_max_calls: int = Field(default=1, ge=1)


class ReplicaSettings(_Group):
    """How reads choose a replica, and what happens when none is usable."""

    strategy: Literal["writer_only", "round_robin"] = "round_robin"
    fallback_to_writer: bool = True


class RetrySettings(_Group):
    """Retries of safe-to-repeat work: acquisition and server-rolled-back transactions."""

    max_attempts: int = Field(default=4, ge=1, le=100)
    initial_backoff_s: float = Field(default=0.05, ge=0)
    max_backoff_s: float = Field(default=2.0, ge=0)
    max_total_s: float = Field(default=10.0, gt=0)
    wait: bool = True


class LoggingSettings(_Group):
    """How log lines look."""

    format: Literal["json", "console"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


PRESETS: Final[Mapping[Environment, Mapping[str, Mapping[str, object]]]] = {
    "dev": {"logging": {"format": "console"}},
    "test": {
        "logging": {"format": "console", "level": "warning"},
        "retry": {"wait": False},
        "database": {"acquire_timeout_s": 2.0, "connect_timeout_s": 2.0, "replica_eject_s": 1.0},
        "circuit_breaker": {"recovery_time_s": 0.5},
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
    logging: LoggingSettings = LoggingSettings()

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

    def secret_values(self) -> tuple[str, ...]:
        """Every secret configured, so a log processor can scrub it wherever it shows up."""
        urls = [self.database.url, *self.database.replica_urls]
        passwords = (urlsplit(url.get_secret_value()).password for url in urls if url is not None)
        return tuple(p for p in passwords if p)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, or raise ``ConfigurationError`` naming every bad field.

    The message never includes the rejected values, since a rejected DSN may hold a password.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
    except SettingsError as exc:
        # pydantic-settings names the field in its message; its cause may quote the value.
        raise ConfigurationError(f"invalid settings: {str(exc).split(':', 1)[0]}") from None
