"""``demo --faults``' script timings: ``--seconds`` stretches or shrinks every step alike."""

from __future__ import annotations

import pytest

from demo_faults import FaultPlan


@pytest.mark.parametrize("seconds", [4.0, 8.0, 24.0, 60.0])
def test_a_scaled_plan_lasts_the_given_seconds_with_its_steps_in_proportion(seconds: float) -> None:
    plan = FaultPlan()

    scaled = plan.scaled_to(seconds)

    assert scaled.total_s == pytest.approx(seconds)
    factor = seconds / plan.total_s
    assert scaled.replica_down_s == pytest.approx(plan.replica_down_s * factor)
    assert scaled.writer_down_s == pytest.approx(plan.writer_down_s * factor)
    assert scaled.latency_for_s == pytest.approx(plan.latency_for_s * factor)


def test_scaling_keeps_the_injected_latency_and_the_recovery_bound() -> None:
    plan = FaultPlan()

    scaled = plan.scaled_to(6.0)

    assert scaled.latency_round_trip_s == plan.latency_round_trip_s
    assert scaled.recovery_timeout_s == plan.recovery_timeout_s
