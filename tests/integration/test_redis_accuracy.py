"""Four OS processes share one Redis rate limit: the total and every one-second window stay in bounds.

Each process calls at half the limit (so twice the limit together) for several seconds; Redis's
own clock times the decisions, so the same holds when the processes' clocks are seconds apart.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from tests.redis_support import RedisServer

RATE: Final = 100.0
BURST: Final = 10.0
SECONDS: Final = 4.0
PROCESSES: Final = 4
ROOT: Final = Path(__file__).resolve().parents[2]
# Every process is connected and waiting before the start is announced this far ahead of it.
START_AHEAD_S: Final = 2.0
WORKER: Final = "tests.processes.rate_limit_worker"


def _start(server: RedisServer, key: str, offsets: list[float]) -> list[subprocess.Popen[str]]:
    demand = 2 * RATE / PROCESSES
    common = [server.url(), key, str(RATE), str(BURST), str(demand), str(SECONDS)]
    return [
        subprocess.Popen(
            [sys.executable, "-m", WORKER, *common, str(i / PROCESSES), str(offset)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, offset in enumerate(offsets)
    ]


def _collect(processes: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for process in processes:
        out, _ = process.communicate(timeout=SECONDS + 30)
        assert process.returncode == 0
        reports.append(json.loads(out))
    return reports


def _max_in_any_window(times: list[float], window_s: float) -> int:
    """The most admissions in any half-open window [t, t + window_s) that starts at an admission."""
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered))


@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict[str, Any]]]:
    """Both runs at once, on keys of their own: clocks in agreement, and clocks ±2 s apart."""
    with RedisServer() as server:
        started = {
            "aligned": _start(server, "aligned", [0.0] * PROCESSES),
            "skewed": _start(server, "skewed", [2.0, -2.0, 2.0, -2.0]),
        }
        every = [process for processes in started.values() for process in processes]
        try:
            for process in every:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready"
            reply = server.command("TIME").split(b"\r\n")  # *2, $10, seconds, $6, microseconds
            start_at = int(reply[2]) + int(reply[4]) / 1e6 + START_AHEAD_S
            for process in every:
                assert process.stdin is not None
                process.stdin.write(f"{start_at}\n")
                process.stdin.flush()
            return {name: _collect(processes) for name, processes in started.items()}
        finally:
            for process in every:
                if process.poll() is None:
                    process.kill()
                process.communicate()


@pytest.mark.parametrize("clocks", ["aligned", "skewed"])
def test_four_processes_at_twice_the_limit_admit_the_rate_and_the_burst_and_no_more(
    runs: dict[str, list[dict[str, Any]]], clocks: str
) -> None:
    reports = runs[clocks]
    assert [report["late_s"] for report in reports] == [0.0] * PROCESSES, "a process started late"
    assert all(sum(report["failures"].values()) == 0 for report in reports), "Redis decided every call"
    decided = [t for report in reports for t in report["decided_at"]]
    admitted = [t for report in reports for t in report["admitted_at"]]
    elapsed_s = max(decided) - min(decided)  # by Redis's clock
    allowance = RATE * elapsed_s + BURST
    worst_window = _max_in_any_window(admitted, 1.0)
    print(
        f"{clocks}: {len(decided)} calls over {elapsed_s:.3f} s, {len(admitted)} admitted "
        f"({len(admitted) / allowance:.4f} of rate x time + burst), busiest second {worst_window}"
    )
    # While every process is calling, the demand is twice the limit: the rate must be used up.
    # (A loaded machine runs the processes late and apart, so the start and the end, where fewer
    # are calling, are left out of this bound; the upper bounds hold over any stretch.)
    all_in = max(min(report["decided_at"]) for report in reports)
    all_out = min(max(report["decided_at"]) for report in reports)
    together = [t for t in admitted if all_in <= t <= all_out]
    assert all_out - all_in >= SECONDS / 2, "the processes barely overlapped"
    assert len(decided) >= 1.5 * RATE * SECONDS  # the demand really was well above the limit
    assert len(admitted) <= allowance + 1
    assert len(together) >= 0.97 * RATE * (all_out - all_in)
    assert worst_window <= RATE + BURST
