"""The token retry budget: its reserve, its ratio, ageing, and its bookkeeping against a plain model."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.retry_budget import TokenRetryBudget, UnlimitedRetryBudget


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budget_on(clock: FakeClock, **settings_: Any) -> TokenRetryBudget:
    defaults: dict[str, Any] = {"ratio": 0.2, "min_retries_per_s": 1.0, "ttl_s": 10.0}
    return TokenRetryBudget(**(defaults | settings_), clock=clock)


def withdraw_all(budget: TokenRetryBudget) -> int:
    granted = 0
    while budget.try_withdraw():
        granted += 1
    return granted


@pytest.mark.parametrize(
    ("settings_", "named"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": math.inf}, "ratio"),
        ({"min_retries_per_s": -1.0}, "min_retries_per_s"),
        ({"ttl_s": 0.0}, "ttl_s"),
        ({"ttl_s": math.nan}, "ttl_s"),
    ],
)
def test_invalid_settings_are_refused_with_the_argument_named(settings_: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        TokenRetryBudget(**settings_)


def test_a_quiet_process_may_still_make_its_floor_of_retries() -> None:
    assert withdraw_all(budget_on(FakeClock(), min_retries_per_s=2.0, ttl_s=5.0)) == 10


def test_every_five_requests_earn_one_retry_at_twenty_percent() -> None:
    budget = budget_on(FakeClock(), min_retries_per_s=0.0)
    for _ in range(4):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    for _ in range(50):
        budget.deposit()
    assert withdraw_all(budget) == 10


def test_what_was_spent_comes_back_once_it_has_aged_out() -> None:
    clock = FakeClock()
    budget = budget_on(clock)
    assert withdraw_all(budget) == 10
    clock.now = 9.0
    assert not budget.try_withdraw()
    clock.now = 10.0
    assert withdraw_all(budget) == 10


def test_deposits_age_out_too() -> None:
    clock = FakeClock()
    budget = budget_on(clock, min_retries_per_s=0.0)
    for _ in range(100):
        budget.deposit()
    clock.now = 10.0
    assert not budget.try_withdraw()


def test_the_switched_off_budget_grants_every_retry() -> None:
    budget = UnlimitedRetryBudget()
    budget.deposit()
    assert all(budget.try_withdraw() for _ in range(1000))


@pytest.mark.parametrize(("requests_per_s", "ratio"), [(50, 0.2), (200, 0.1), (100, 0.5)])
def test_in_a_retry_storm_retries_add_the_ratio_plus_the_floor_to_the_request_rate(
    requests_per_s: int, ratio: float
) -> None:
    clock = FakeClock()
    budget = budget_on(clock, ratio=ratio, min_retries_per_s=5.0, ttl_s=2.0)
    granted_late = 0
    for tick in range(30 * requests_per_s):  # thirty seconds in which every request wants 3 retries
        clock.now = tick / requests_per_s
        budget.deposit()
        granted = sum(budget.try_withdraw() for _ in range(3))
        if clock.now >= 10.0:
            granted_late += granted
    assert granted_late / 20.0 == pytest.approx(ratio * requests_per_s + 5.0, rel=0.05)


operations = st.lists(
    st.one_of(
        st.just(("deposit", 0.0)), st.just(("withdraw", 0.0)), st.tuples(st.just("wait"), st.floats(0.0, 3.0))
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(operations=operations, ratio=st.floats(0.0, 2.0), min_retries_per_s=st.floats(0.0, 2.0))
def test_the_balance_is_what_the_last_ten_buckets_hold_plus_the_reserve(
    operations: list[tuple[str, float]], ratio: float, min_retries_per_s: float
) -> None:
    clock = FakeClock()
    budget = budget_on(clock, ratio=ratio, min_retries_per_s=min_retries_per_s, ttl_s=5.0)
    entries: list[tuple[float, float]] = []  # the model: every deposit and withdrawal, when it happened

    def model_balance() -> float:
        newest = math.floor(clock.now / 0.5)
        recent = sum(amount for at, amount in entries if math.floor(at / 0.5) > newest - 10)
        return min_retries_per_s * 5.0 + recent

    for operation, seconds in operations:
        if operation == "deposit":
            budget.deposit()
            entries.append((clock.now, ratio))
        elif operation == "withdraw":
            expected = model_balance() >= 1.0 - 1e-6
            assert budget.try_withdraw() is expected
            if expected:
                entries.append((clock.now, -1.0))
        else:
            clock.now += seconds
        assert budget.balance == pytest.approx(model_balance(), abs=1e-6)
