"""Settings of the resilience policies: choices, defaults and the checks that span fields."""

from __future__ import annotations

import pytest

from ports.errors import ConfigurationError
from settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_REPLICA_URLS", "HEX_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"rate_limiter": {"implementation": "leaky_bucket"}}, "rate_limiter.implementation"),
        (
            {"rate_limiter": {"implementation": "sliding_window", "rate_per_s": 2, "window_s": 0.1}},
            "window_s",
        ),
        ({"circuit_breaker": {"window": "sliding"}}, "circuit_breaker.window"),
        ({"circuit_breaker": {"window_size": 5, "minimum_calls": 6}}, "minimum_calls"),
        ({"circuit_breaker": {"failure_rate_threshold": 50}}, "circuit_breaker.failure_rate_threshold"),
        ({"retry": {"budget": "finagle"}}, "retry.budget"),
        ({"retry": {"budget_ratio": -0.2}}, "retry.budget_ratio"),
        ({"concurrency": {"implementation": "vegas"}}, "concurrency.implementation"),
        ({"concurrency": {"backoff_ratio": 1.0}}, "concurrency.backoff_ratio"),
    ],
)
def test_a_bad_policy_setting_fails_at_start_up_naming_its_field(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        load_settings(**overrides)


def test_a_time_window_may_ask_for_more_calls_than_its_length_in_seconds() -> None:
    settings = load_settings(circuit_breaker={"window": "time", "window_size": 10, "minimum_calls": 50})
    assert settings.circuit_breaker.minimum_calls == 50


def test_policy_choices_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEX_RATE_LIMITER__IMPLEMENTATION", "sliding_window")
    monkeypatch.setenv("HEX_CIRCUIT_BREAKER__WINDOW", "time")
    monkeypatch.setenv("HEX_RETRY__BUDGET", "unlimited")
    monkeypatch.setenv("HEX_CONCURRENCY__IMPLEMENTATION", "gradient")
    settings = load_settings()
    assert settings.rate_limiter.implementation == "sliding_window"
    assert settings.circuit_breaker.window == "time"
    assert settings.retry.budget == "unlimited"
    assert settings.concurrency.implementation == "gradient"
