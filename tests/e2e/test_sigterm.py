"""SIGTERM during the demo workload: exit 0 within the drain deadline, nothing lost or half-applied."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import fetch_value

CLI = str(Path(sys.executable).parent / "alchemy-hex")


def test_sigterm_drains_the_workload_and_keeps_every_acknowledged_transfer(
    database_url: str, tmp_path: Path
) -> None:
    ack_file = tmp_path / "acks.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    env |= {"DATABASE_URL": database_url, "HEX_DATABASE__TEARDOWN_TIMEOUT_S": "5"}
    process = subprocess.Popen(
        [
            CLI,
            "demo",
            "--json",
            "--seconds",
            "60",
            "--workers",
            "8",
            "--accounts",
            "6",
            "--ack-file",
            str(ack_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_transfers(database_url, at_least=50, timeout_s=30)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    elapsed = time.monotonic() - signalled

    assert process.returncode == 0, stderr[-2000:]
    assert elapsed < 10
    assert '"passed": true' in stdout
    acknowledged = ack_file.read_text().split()
    assert acknowledged
    stored = asyncio.run(
        fetch_value(
            database_url,
            "SELECT count(*) FROM transfers t WHERE t.idempotency_key = ANY(string_to_array('"
            + ",".join(acknowledged)
            + "', ',')) AND (SELECT count(*) FROM entries e WHERE e.transfer_id = t.id) = 2",
        )
    )
    assert stored == len(set(acknowledged))
    half_applied = asyncio.run(
        fetch_value(
            database_url,
            "SELECT count(*) FROM transfers t WHERE t.source_id IS NOT NULL "
            "AND (SELECT count(*) FROM entries e WHERE e.transfer_id = t.id) <> 2",
        )
    )
    assert half_applied == 0


def _wait_for_transfers(dsn: str, *, at_least: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    query = "SELECT count(*) FROM transfers WHERE source_id IS NOT NULL"
    while (count := asyncio.run(fetch_value(dsn, query))) is None or int(str(count)) < at_least:
        assert time.monotonic() < deadline, "the demo never got going"
        time.sleep(0.1)
