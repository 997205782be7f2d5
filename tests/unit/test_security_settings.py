"""Security settings: TLS per target group, credential sources, migration role, and what counts as secret."""

from __future__ import annotations

import pytest

from ports.errors import ConfigurationError
from settings import load_settings

SECRET = "Pass%40word-Unit-77"  # percent-encoded in a DSN: the driver may echo "Pass@word-Unit-77"
KEY_SECRET = "Key-Unit-Secret-88"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_REPLICA_URLS", "HEX_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def test_tls_is_prefer_and_credentials_come_from_the_dsn_by_default() -> None:
    settings = load_settings()
    assert settings.tls.mode == "prefer"
    assert settings.replica_tls is None
    assert settings.credentials.source == "dsn"
    assert settings.migration.url is None


def test_environment_variables_set_tls_for_the_writer_and_override_it_for_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEX_TLS__MODE", "verify-full")
    monkeypatch.setenv("HEX_TLS__CA_FILE", "/etc/ssl/db-ca.pem")
    monkeypatch.setenv("HEX_REPLICA_TLS__MODE", "require")
    monkeypatch.setenv("HEX_MIGRATION__URL", "postgresql://owner:pw@db/ledger")
    settings = load_settings()
    assert (settings.tls.mode, str(settings.tls.ca_file)) == ("verify-full", "/etc/ssl/db-ca.pem")
    assert settings.replica_tls is not None
    assert settings.replica_tls.mode == "require"
    assert settings.migration.url is not None


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"tls": {"mode": "verify"}}, "tls.mode"),
        ({"tls": {"mode": "require", "ca_file": "/ca.pem"}}, "ca_file is only checked by mode verify"),
        ({"tls": {"mode": "prefer", "cert_file": "/c.pem"}}, "a client certificate needs mode require"),
        (
            {"replica_tls": {"mode": "require", "key_file": "/k.pem"}},
            "replica_tls: Value error, key_file needs",
        ),
        ({"credentials": {"source": "vault"}}, "credentials.source"),
        ({"credentials": {"source": "file"}}, "source 'file' needs password_file"),
        ({"credentials": {"source": "static"}}, "source 'static' needs password"),
        ({"credentials": {"source": "command", "command": "get-token 'open"}}, "unbalanced quotes"),
        (
            {"replica_credentials": {"source": "command"}},
            "replica_credentials: Value error, source 'command'",
        ),
        ({"migration": {"url": f"mysql://owner:{SECRET}@db/x"}}, "migration.url"),
        ({"redis": {"url": f"http://:{SECRET}@cache:6379/0"}}, "redis.url"),
        ({"redis": {"url": f"redis://:{SECRET}@cache:port/0"}}, "redis.url"),
        ({"redis": {"url": "redis://cache", "tls_ca_file": "/ca.pem"}}, "redis"),
    ],
)
def test_an_inconsistent_security_setting_names_its_group(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid settings") as caught:
        load_settings(**overrides)
    assert problem in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_command_is_split_like_a_shell_would_without_running_one() -> None:
    settings = load_settings(
        credentials={"source": "command", "command": "aws rds generate-db-auth-token --hostname 'db one'"}
    )
    assert settings.credentials.argv == ("aws", "rds", "generate-db-auth-token", "--hostname", "db one")


def test_every_configured_secret_is_known_for_scrubbing_and_none_is_in_the_repr() -> None:
    settings = load_settings(
        database={"url": f"postgresql://app:{SECRET}@db/x"},
        migration={"url": "postgresql://owner:Owner-Secret-99@db/x"},
        tls={"mode": "require", "cert_file": "/c.pem", "key_password": KEY_SECRET},
        replica_tls={"mode": "require", "cert_file": "/c.pem", "key_password": KEY_SECRET + "-r"},
        credentials={"source": "static", "password": "Static-Secret-55"},
    )
    secrets = set(settings.secret_values())
    assert {SECRET, "Pass@word-Unit-77", "Owner-Secret-99", KEY_SECRET, KEY_SECRET + "-r"} <= secrets
    assert "Static-Secret-55" in secrets
    dumped = repr(settings) + str(settings.model_dump())
    assert not any(secret in dumped for secret in secrets)


def test_the_redis_password_and_key_passphrase_are_known_for_scrubbing_and_not_in_the_repr() -> None:
    settings = load_settings(
        redis={
            "url": "rediss://svc:Redis-Secret%2F42@cache:6380/0",
            "tls_mode": "verify-full",
            "tls_cert_file": "/c.pem",
            "tls_key_password": "Redis-Key-Secret-7",
        },
        rate_limiter={"implementation": "redis"},
    )
    secrets = set(settings.secret_values())
    assert {"Redis-Secret%2F42", "Redis-Secret/42", "Redis-Key-Secret-7"} <= secrets
    dumped = repr(settings) + str(settings.model_dump())
    assert not any(secret in dumped for secret in secrets)
