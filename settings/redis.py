"""The Redis that policies shared between instances use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, model_validator

from settings.group import SettingsGroup

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


class RedisSettings(SettingsGroup):
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
