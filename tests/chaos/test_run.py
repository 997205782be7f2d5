"""``make chaos``'s verdict: exit 0 only when every invariant of every scenario held."""

from __future__ import annotations

from tests.chaos.harness import Row, ScenarioReport
from tests.chaos.run import exit_status, run_one, table


def _report(name: str, *problems: str) -> ScenarioReport:
    return ScenarioReport(Row(name, 10, 2, 0, 0, 0, None), "notes", problems)


def test_the_run_exits_zero_when_every_invariant_held() -> None:
    assert exit_status([_report("a"), _report("b")]) == 0


def test_one_broken_invariant_in_any_scenario_makes_the_run_exit_non_zero() -> None:
    reports = [_report("a"), _report("b", "errors escaped to the event loop: 1 in the anyio rounds")]

    assert exit_status(reports) == 1
    assert "BROKEN" in table(reports)


def test_a_scenario_that_crashes_is_a_broken_invariant_too() -> None:
    async def crashing(*_args: object) -> ScenarioReport:
        raise RuntimeError("the lab fell over")

    report = run_one("crash", crashing, lab=None)  # type: ignore[arg-type]  # never reaches the lab

    assert report.problems == ("the scenario itself failed: RuntimeError: the lab fell over",)
    assert exit_status([_report("a"), report]) == 1


def test_a_run_that_ran_nothing_does_not_pass() -> None:
    assert exit_status([]) == 1
