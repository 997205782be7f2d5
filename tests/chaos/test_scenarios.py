"""The chaos scenarios, shortened, on a throwaway cluster: ``make chaos`` runs them at full length.

Each scenario runs once per test session; its tests read its report. A known defect of the
product, when there is one, is a test of its own marked ``xfail(strict=True)`` with the finding as
the reason, so the rest of the scenario's invariants keep being checked and a fix shows up as an
unexpected pass (none is marked now).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.chaos.harness import SHORT, ChaosLab, ScenarioReport
from tests.chaos.scenarios import SCENARIOS

Run = Callable[[str], ScenarioReport]


@pytest.fixture(scope="session")
def run(lab: ChaosLab) -> Run:
    """Runs a scenario (shortened) the first time it is asked for, then hands out its report."""
    reports: dict[str, ScenarioReport] = {}

    def report_of(name: str) -> ScenarioReport:
        if name not in reports:
            reports[name] = asyncio.run(SCENARIOS[name](lab, SHORT))
        return reports[name]

    return report_of


def _assert_held(report: ScenarioReport, problems: list[str] | None = None) -> None:
    broken = report.problems if problems is None else problems
    assert not broken, f"{report.row}\n{report.notes}"
    assert (report.row.lost, report.row.duplicated, report.row.leaked_sessions) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_writer_restarted_under_load_opens_the_circuit_fails_fast_and_recovers_by_itself(
    run: Run, mode: str
) -> None:
    report = run(f"writer-restart-{mode}")

    _assert_held(report)
    assert report.row.recovery_s is not None


def test_killing_every_pooled_backend_fails_at_most_the_work_in_flight_and_recovers_at_once(run: Run) -> None:
    _assert_held(run("terminate-backends"))


def test_a_black_hole_loses_nothing_leaks_nothing_and_the_service_recovers_when_it_lifts(run: Run) -> None:
    report = run("black-hole")

    _assert_held(report, report.problems_without("beyond its bound", "still hanging"))
    assert report.row.recovery_s is not None


def test_no_call_outlasts_its_configured_timeouts_in_a_black_hole(run: Run) -> None:
    report = run("black-hole")

    assert not report.problems_with("beyond its bound", "still hanging"), report.notes


def test_a_latency_spike_with_a_burst_of_fifty_requests_never_grows_the_pool_past_its_capacity(
    run: Run,
) -> None:
    _assert_held(run("latency-spike"))


@pytest.mark.parametrize("name", ["pool-exhaustion", "pool-exhaustion-no-breaker"])
def test_an_exhausted_pool_refuses_waiting_requests_promptly_and_never_deadlocks(run: Run, name: str) -> None:
    report = run(name)

    _assert_held(report, report.problems_without("CRITICAL requests failed"))


def test_critical_work_gets_through_a_pool_exhausted_by_slow_holders(run: Run) -> None:
    report = run("pool-exhaustion")

    assert not report.problems_with("CRITICAL requests failed"), report.notes


def test_critical_work_gets_through_a_full_wait_queue_when_the_breaker_is_off(run: Run) -> None:
    report = run("pool-exhaustion-no-breaker")

    assert not report.problems_with("CRITICAL requests failed"), report.notes


def test_a_cancellation_storm_leaks_no_checkout_no_transaction_and_no_backend(run: Run) -> None:
    report = run("cancellation-storm")

    _assert_held(report, report.problems_without("escaped to the event loop"))


def test_no_error_of_a_cancelled_unit_of_work_escapes_to_the_event_loop(run: Run) -> None:
    report = run("cancellation-storm")

    assert not report.problems_with("escaped to the event loop"), report.notes
    assert "0 errors escaped to the event loop" in report.notes


def test_sigterm_to_the_demo_under_load_exits_zero_in_time_and_keeps_every_acknowledged_transfer(
    run: Run,
) -> None:
    report = run("sigterm-demo")

    _assert_held(report)
    assert report.row.ok > 0


def test_reads_go_on_while_a_replica_is_down_and_return_to_it_once_it_is_back(run: Run) -> None:
    _assert_held(run("replica-restart"))


def test_bad_input_of_every_kind_gets_a_clear_error_and_no_password_is_ever_printed(run: Run) -> None:
    report = run("bad-input")

    _assert_held(report)
    assert report.row.failed_clean >= 30
