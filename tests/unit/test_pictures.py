"""Pictures are files a person can open: PNGs drawn headless from a timeline and from bench results."""

from __future__ import annotations

from pathlib import Path

from pictures import Timeline, bench_chart, saturation_chart, spike_chart, timeline_chart
from tests.chaos.harness import Row, ScenarioReport
from tests.chaos.run import draw_timelines

PNG = b"\x89PNG\r\n\x1a\n"


def _timeline() -> Timeline:
    calls = [(t / 10, t / 10 + 0.01, None if not 20 <= t < 40 else "CircuitOpenError") for t in range(60)]
    return Timeline(calls, faults=[(2.0, 4.0), (5.0, 5.0)], recovered_at=4.2)


def test_a_timeline_is_drawn_as_a_png(tmp_path: Path) -> None:
    drawn = timeline_chart(tmp_path / "t.png", "writer restarted", _timeline())

    assert drawn.read_bytes().startswith(PNG)


def test_make_chaos_draws_one_timeline_per_scenario_with_calls(tmp_path: Path) -> None:
    row = Row("writer-restart-fast", 1, 0, 0, 0, 0, None)
    reports = [
        ScenarioReport(row, "", (), _timeline()),
        ScenarioReport(Row("bad-input", 0, 0, 0, 0, 0, None), "", (), Timeline(())),
    ]

    assert draw_timelines(reports, tmp_path) == f"1 timelines drawn in {tmp_path}/"
    assert [p.name for p in tmp_path.iterdir()] == ["writer-restart-fast.png"]


def test_the_bench_chart_is_drawn_as_a_png(tmp_path: Path) -> None:
    runs = {"b_sqlalchemy_connect": {"1": {"ops_per_s": 2900.0}, "10": {"ops_per_s": 6000.0}}}

    drawn = bench_chart(tmp_path / "b.png", runs, {"uow_vs_session": 0.97})

    assert drawn.read_bytes().startswith(PNG)


def test_the_spike_chart_is_drawn_as_a_png(tmp_path: Path) -> None:
    series = {"ours": [(0.0, 5, 45, 1), (1.0, 5, 40, 1), (2.0, 6, 0, 0)], "stock": [(0.0, 50, 0, 45)]}

    assert spike_chart(tmp_path / "s.png", series).read_bytes().startswith(PNG)


def test_the_saturation_chart_is_drawn_as_a_png(tmp_path: Path) -> None:
    limits = {"aimd": [(0.0, 10), (4.0, 3), (8.0, 2)], "gradient": [(0.0, 10), (8.0, 3)]}
    goodput = {"aimd": {"below": 0.5, "overload": 0.99}, "fixed_high": {"below": 0.5, "overload": 0.35}}

    drawn = saturation_chart(tmp_path / "a.png", limits, goodput, [("below", 0.5), ("overload", 2.0)], 4.0)

    assert drawn.read_bytes().startswith(PNG)
