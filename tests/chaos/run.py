"""``make chaos``: every scenario at full length on throwaway servers; one table and ``chaos-results.json``.

Run from the project root as ``python -m tests.chaos.run`` (the Makefile does). Each scenario is
bounded by ``SCENARIO_TIMEOUT_S`` and the whole run by the scenarios' own durations (about two
minutes); all traffic stays on loopback. The exit status is 1 when any invariant broke: the
table still lists every scenario, and the broken invariants follow it in words.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Final

import pictures
from container import setup_logging
from settings import load_settings
from tests.chaos.harness import FULL, ChaosLab, Row, ScenarioReport, chaos_lab
from tests.chaos.scenarios import SCENARIOS, Scenario

RESULTS_FILE: Final = Path("chaos-results.json")
TIMELINES_DIR: Final = Path("chaos-timelines")
SCENARIO_TIMEOUT_S: Final = 120.0
COLUMNS: Final = ("scenario", "ok", "failed_clean", "lost", "duplicated", "leaked_sessions", "recovery_s")


def run_one(name: str, scenario: Scenario, lab: ChaosLab) -> ScenarioReport:
    """The scenario's report; a crash or a timeout is a report too, with the reason as its problem."""

    async def bounded() -> ScenarioReport:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            return await scenario(lab, FULL)

    try:
        return asyncio.run(bounded())
    except Exception as error:
        row = Row(name, 0, 0, 0, 0, 0, None)
        return ScenarioReport(row, "", (f"the scenario itself failed: {type(error).__name__}: {error}",))


def table(reports: list[ScenarioReport]) -> str:
    rows = [
        [*(_cell(value) for value in report.row.as_json().values()), _verdict(report)] for report in reports
    ]
    header = [*COLUMNS, "verdict"]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines
    )


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _verdict(report: ScenarioReport) -> str:
    return "ok" if report.passed else "BROKEN"


def details(reports: list[ScenarioReport]) -> str:
    lines = []
    for report in reports:
        lines.append(f"{report.row.scenario}: {report.notes}")
        lines.extend(f"    BROKEN: {problem}" for problem in report.problems)
    return "\n".join(lines)


def main() -> int:
    # Only errors: the scenarios provoke thousands of expected warnings (circuit opened, retries).
    setup_logging(load_settings(environment="test", logging={"level": "error"}))
    reports = []
    started = time.monotonic()
    with chaos_lab() as lab:
        for name, scenario in SCENARIOS.items():
            began = time.monotonic()
            reports.append(run_one(name, scenario, lab))
            print(f"chaos: {name} done in {time.monotonic() - began:.1f}s", file=sys.stderr, flush=True)
    RESULTS_FILE.write_text(json.dumps([report.row.as_json() for report in reports], indent=2) + "\n")
    drawn = draw_timelines(reports, TIMELINES_DIR)
    print(table(reports))
    print()
    print(details(reports))
    print(f"\n{len(reports)} scenarios in {time.monotonic() - started:.0f}s; rows written to {RESULTS_FILE}")
    print(drawn)
    return exit_status(reports)


def draw_timelines(reports: list[ScenarioReport], folder: Path) -> str:
    """One PNG per scenario that ran calls (``folder/<scenario>.png``); says where, or why not."""
    if not pictures.available():
        return "no timelines drawn: matplotlib is missing (the pictures extra)"
    drawn = [
        pictures.timeline_chart(folder / f"{report.row.scenario}.png", report.row.scenario, report.timeline)
        for report in reports
        if report.timeline is not None and report.timeline.calls
    ]
    return f"{len(drawn)} timelines drawn in {folder}/"


def exit_status(reports: list[ScenarioReport]) -> int:
    """0 when every invariant of every scenario held, else 1 (a scenario that crashed broke one)."""
    return 0 if reports and all(report.passed for report in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
