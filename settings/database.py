"""Where the databases are and how connections behave: pool, timeouts, TLS, credentials, replicas."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, model_validator

from settings.dsn import PostgresDsn
from settings.group import SettingsGroup


class DatabaseSettings(SettingsGroup):
    """Where the writer and replicas are, and how connections to them behave.

    Each target's pool holds at most ``pool_size + max_overflow`` connections (the maximum),
    opened in the background at most ``max_concurrent_connects`` at a time, only while requests
    wait that the connections coming back will not serve, or while fewer than ``min_idle``
    (default ``pool_size``) are open; the idle timeout closes connections beyond ``min_idle``.
    With ``overload_wait_s`` set (off by default), a request that joins a wait queue within
    ``overload_window_s`` of a request's timing out in it waits at most ``overload_wait_s``
    instead of ``acquire_timeout_s``: a burst keeps its whole wait, an overload is refused at
    once, and the requests served are not all late (the idea of Facebook's controlled delay).
    """

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
    max_concurrent_connects: int = Field(default=1, ge=1, le=100)
    overload_wait_s: float | None = Field(default=None, gt=0)
    overload_window_s: float = Field(default=1.0, gt=0)
    stats_log_interval_s: float | None = Field(default=60.0, gt=0)
    application_name: str = Field(default="alchemy-hex", max_length=63)

    @model_validator(mode="after")
    def _min_idle_fits_the_maximum(self) -> Self:
        if self.min_idle is not None and self.min_idle > self.pool_size + self.max_overflow:
            raise ValueError("min_idle must not exceed the maximum, pool_size + max_overflow")
        wait_s = self.overload_wait_s
        if wait_s is not None and wait_s >= self.acquire_timeout_s:
            raise ValueError("overload_wait_s must be shorter than acquire_timeout_s (else it does nothing)")
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


class TlsSettings(SettingsGroup):
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


class CredentialSettings(SettingsGroup):
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


class MigrationSettings(SettingsGroup):
    """The role that owns the schema and runs migrations; the service's own role when ``url`` is unset."""

    url: PostgresDsn | None = None
