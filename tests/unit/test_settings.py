"""Settings: sources, presets, and errors that name the field without echoing a secret."""

from __future__ import annotations

import pytest

from ports.errors import ConfigurationError
from settings import load_settings, mask_dsn

SECRET = "s3cr3t-Pa55-w0rd"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_REPLICA_URLS", "HEX_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def test_conventional_variables_name_the_writer_and_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db:5432/ledger")
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "postgresql://app@r1/ledger, postgresql://app@r2/ledger")
    settings = load_settings()
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value() == "postgresql://app@db:5432/ledger"
    assert [u.get_secret_value() for u in settings.database.replica_urls] == [
        "postgresql://app@r1/ledger",
        "postgresql://app@r2/ledger",
    ]


def test_prefixed_variables_nest_with_double_underscores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEX_DATABASE__POOL_SIZE", "33")
    monkeypatch.setenv("HEX_CIRCUIT_BREAKER__IMPLEMENTATION", "always_closed")
    settings = load_settings()
    assert settings.database.pool_size == 33
    assert settings.circuit_breaker.implementation == "always_closed"


@pytest.mark.parametrize(
    ("environment", "log_format", "waits"),
    [("dev", "console", True), ("test", "console", False), ("prod", "json", True)],
)
def test_each_environment_has_a_preset(environment: str, log_format: str, waits: bool) -> None:
    settings = load_settings(environment=environment)
    assert settings.logging.format == log_format
    assert settings.retry.wait is waits


def test_explicit_values_win_over_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEX_ENVIRONMENT", "prod")
    monkeypatch.setenv("HEX_LOGGING__FORMAT", "console")
    settings = load_settings()
    assert settings.environment == "prod"
    assert settings.logging.format == "console"
    assert settings.rate_limiter.implementation == "token_bucket"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rate_limiter": {"implementation": "leaky"}}, "rate_limiter.implementation"),
        ({"database": {"pool_size": -1}}, "database.pool_size"),
        ({"environment": "staging"}, "environment"),
        ({"database": {"url": f"mysql://root:{SECRET}@db/x"}}, "database.url"),
        ({"database": {"url": f"postgresql://u:{SECRET}@db:notaport/x"}}, "database.url"),
        ({"database": {"replica_urls": [f"http://u:{SECRET}@r/x"]}}, "database.replica_urls.0"),
        ({"database": {"poolsize": 3}}, "database.poolsize"),
        ({"database": {"overload_wait_s": 5.0, "acquire_timeout_s": 5.0}}, "overload_wait_s must be shorter"),
        ({"database": {"overload_window_s": 0}}, "database.overload_window_s"),
    ],
)
def test_a_bad_value_names_its_field_and_never_the_secret(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert field in message
    assert SECRET not in message
    assert caught.value.__cause__ is None


def test_a_bad_environment_variable_is_reported_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{SECRET}@db:99999999/x")
    with pytest.raises(ConfigurationError, match=r"database\.url") as caught:
        load_settings()
    assert SECRET not in str(caught.value)


def test_the_settings_repr_masks_passwords() -> None:
    settings = load_settings(database={"url": f"postgresql://u:{SECRET}@db/x"})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.secret_values() == (SECRET,)


def test_a_masked_dsn_keeps_everything_but_the_password() -> None:
    assert mask_dsn(f"postgresql://app:{SECRET}@db:5432/ledger") == "postgresql://app:***@db:5432/ledger"
    assert mask_dsn("postgresql://app@db/ledger") == "postgresql://app@db/ledger"


def test_a_query_string_password_is_a_secret_like_a_user_info_one() -> None:
    encoded = SECRET.replace("-", "%2D")
    settings = load_settings(
        database={"url": f"postgresql://app@db/ledger?sslmode=require&password={encoded}"},
        migration={"url": f"postgresql://owner:{SECRET}-owner@db/ledger?sslpassword=Key-{SECRET}"},
    )

    assert {SECRET, encoded, f"{SECRET}-owner", f"Key-{SECRET}"} <= set(settings.secret_values())
    assert mask_dsn(f"postgresql://app@db/x?sslmode=require&password={encoded}&application_name=a") == (
        "postgresql://app@db/x?sslmode=require&password=***&application_name=a"
    )
    assert (
        mask_dsn(f"postgresql:///x?host=/run&password={SECRET}") == "postgresql:///x?host=/run&password=***"
    )
