"""The root ``Settings``: its sources, the presets, the checks across groups, ``load_settings``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final, Literal, Self

from pydantic import ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from ports.errors import ConfigurationError
from settings.database import (
    CredentialSettings,
    DatabaseSettings,
    MigrationSettings,
    ReplicaSettings,
    TlsSettings,
)
from settings.dsn import dsn_passwords
from settings.http import HttpSettings
from settings.logs import LoggingSettings
from settings.policies import CircuitBreakerSettings, ConcurrencySettings, RateLimiterSettings, RetrySettings
from settings.redis import RedisSettings
from settings.telemetry import TelemetrySettings

Environment = Literal["dev", "test", "prod"]


PRESETS: Final[Mapping[Environment, Mapping[str, Mapping[str, object]]]] = {
    "dev": {"logging": {"format": "console"}},
    "test": {
        "logging": {"format": "console", "level": "warning"},
        "retry": {"wait": False},
        "database": {"acquire_timeout_s": 2.0, "connect_timeout_s": 2.0, "replica_eject_s": 1.0},
        "circuit_breaker": {"recovery_time_s": 0.5},
        "replicas": {"probe_interval_s": 0.2, "probe_timeout_s": 0.5},
        "http": {"drain_delay_s": 0.5, "shutdown_timeout_s": 10.0},
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
    http: HttpSettings = HttpSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

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
        passwords = [dsn_passwords(url.get_secret_value()) for url in urls if url is not None]
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
