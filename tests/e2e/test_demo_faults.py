"""``alchemy-hex demo --faults``, shortened: each scripted fault in order, ridden through, and its picture."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Final

import pytest

import pictures
from tests.support import run_cli

#: The scripted sequence's length here (the demo's default is 24 s): its steps scale down with it.
_SECONDS: Final = "8"
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_STEP_LINES: Final = (
    "replica-1 stopping",
    "replica-1 back after",
    "writer restarting",
    "writer back after",
    "latency +",
    "latency lifted after",
)


def test_the_shortened_fault_demo_rides_through_each_step_in_order(tmp_path: Path) -> None:
    picture = tmp_path / "faults.png"
    started = time.monotonic()

    done = run_cli(
        *("demo", "--faults", "--json", "--seconds", _SECONDS, "--workers", "8", "--accounts", "10"),
        *("--timeline", str(picture)),
        timeout_s=120.0,
    )

    elapsed = time.monotonic() - started
    print(f"\ndemo --faults --seconds {_SECONDS}: {elapsed:.1f} s\n{done.stderr}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert elapsed < 60
    lines = done.stderr.splitlines()
    positions = [next(i for i, line in enumerate(lines) if line.startswith(start)) for start in _STEP_LINES]
    assert positions == sorted(positions), "the steps' lines are out of order"
    summary = json.loads(done.stdout)
    faults = summary["faults"]
    steps = faults["steps"]
    assert [s["step"] for s in steps] == ["replica stopped", "writer restarted", "latency injected"]
    assert all(a["to_s"] <= b["from_s"] for a, b in itertools.pairwise(steps))
    assert all(s["rode_through"] for s in steps), steps
    assert faults["passed"] is True
    # Reads came back to the replica, transfers to the writer, and work went on after the last fault.
    assert summary["reads"]["replicas"][0]["readmissions"] >= 1
    assert summary["errors"].get("CircuitOpenError", 0) > 0, "the writer's restart never opened its circuit"
    acks = faults["acknowledged_transfers"]
    assert acks["acknowledged"] > 0
    assert acks["stored_once"] == acks["acknowledged"]
    assert summary["balance_check"]["passed"] is True
    if not pictures.available():
        assert faults["timeline"] is None
        return
    assert faults["timeline"] == str(picture)
    data = picture.read_bytes()
    assert data.startswith(_PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((), {"DATABASE_URL": "postgresql://owner:Hidden-Pass-4412@127.0.0.1:1/books"}, "DATABASE_URL"),
        (("--replicas", "0"), {}, "--replicas must be at least 1"),
        (("--seconds", "2"), {}, "--seconds of at least 4"),
    ],
    ids=["a database of yours", "no replica", "too short"],
)
def test_the_fault_demo_refuses_what_it_cannot_run_on_saying_why(
    args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    done = run_cli("demo", "--faults", *args, env=env, timeout_s=60.0)

    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    assert done.stderr.startswith("alchemy-hex: error: ")
    assert says in done.stderr
    assert "Hidden-Pass" not in done.stderr
    assert "Traceback" not in done.stderr
