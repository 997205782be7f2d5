"""Validated settings: one root class, a nested group per concern, presets per environment.

Sources, strongest first: keyword arguments; ``HEX_``-prefixed environment variables with ``__``
nesting (``HEX_DATABASE__POOL_SIZE=20``); the conventional ``DATABASE_URL`` and
``DATABASE_REPLICA_URLS`` (comma-separated); the preset of ``environment`` (``dev``, ``test``,
``prod``); the field defaults. Nothing is read at import time: :func:`load_settings` reads.
Passwords stay :class:`SecretStr` until an adapter connects, and no error message prints one.
"""

from __future__ import annotations

from settings.database import (
    CredentialSettings,
    DatabaseSettings,
    MigrationSettings,
    ReplicaSettings,
    TlsSettings,
)
from settings.dsn import PostgresDsn, mask_dsn
from settings.http import HttpSettings
from settings.logs import LoggingSettings
from settings.policies import CircuitBreakerSettings, ConcurrencySettings, RateLimiterSettings, RetrySettings
from settings.redis import RedisSettings, RedisUrl
from settings.root import PRESETS, Environment, Settings, load_settings
from settings.telemetry import TelemetrySettings

__all__ = [
    "PRESETS",
    "CircuitBreakerSettings",
    "ConcurrencySettings",
    "CredentialSettings",
    "DatabaseSettings",
    "Environment",
    "HttpSettings",
    "LoggingSettings",
    "MigrationSettings",
    "PostgresDsn",
    "RateLimiterSettings",
    "RedisSettings",
    "RedisUrl",
    "ReplicaSettings",
    "RetrySettings",
    "Settings",
    "TelemetrySettings",
    "TlsSettings",
    "load_settings",
    "mask_dsn",
]
