"""SIGTERM to the running demo under load.

``tests/e2e/test_sigterm.py`` checks the same promise with fixed figures; this one runs on the
chaos lab at the scenario's scale and feeds the ledger and the table.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Final

import asyncpg

from tests.chaos.harness import (
    ChaosLab,
    Scale,
    ScenarioReport,
    admin_dsn_of,
    leaked_after_shutdown,
    report,
)
from tests.chaos.ledger import AckLedger, Request
from tests.support import CLI

#: The demo drains for at most ``teardown_timeout_s``; the rest is interpreter exit and slack.
TEARDOWN_S: Final = 5.0
DRAIN_BOUND_S: Final = TEARDOWN_S + 5.0


async def _transfers(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM transfers WHERE source_id IS NOT NULL"))
    finally:
        await connection.close()


async def _wait_for_transfers(dsn: str, at_least: int, timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.1)):
        if await _transfers(dsn) >= at_least:
            return True
        await asyncio.sleep(0.1)
    return False


def cli_env(**variables: str) -> dict[str, str]:
    """This environment without any ``DATABASE_*``/``HEX_*`` variable, plus ``variables``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    return {**base, **variables}


async def sigterm_demo(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """7. SIGTERM to ``alchemy-hex demo`` while its workers are busy.

    In-flight work finishes or is cleanly refused, the process exits 0 within the drain deadline,
    and every transfer it acknowledged (its ``--ack-file``) is in the database exactly once.
    Recovery is the time from the signal to the exit.
    """
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = "chaos-sigterm"
    env = cli_env(
        DATABASE_URL=dsn,
        HEX_DATABASE__TEARDOWN_TIMEOUT_S=str(TEARDOWN_S),
        HEX_DATABASE__APPLICATION_NAME=app,
        HEX_LOGGING__LEVEL="warning",
    )
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chaos-sigterm-") as scratch:
        ack_file = Path(scratch) / "acks.txt"
        args = ["demo", "--json", "--seconds", "120", "--workers", "8", "--accounts", "6"]
        process = await asyncio.create_subprocess_exec(
            CLI,
            *args,
            "--ack-file",
            str(ack_file),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            if not await _wait_for_transfers(dsn, scale.count(30, 300), timeout_s=30):
                problems.append("the demo never got going")
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(DRAIN_BOUND_S + 10):
                stdout, stderr = await process.communicate()
            drained = time.monotonic() - signalled
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        acknowledged = ack_file.read_text().split() if ack_file.exists() else []
    leaked = await leaked_after_shutdown(admin_dsn_of(dsn), app)

    summary: dict[str, object] = {}
    if process.returncode != 0:
        problems.append(f"the demo exited {process.returncode}: {stderr.decode()[-500:]}")
    else:
        summary = json.loads(stdout)
    if drained > DRAIN_BOUND_S:
        problems.append(f"the demo took {drained:.1f}s to exit after SIGTERM (bound {DRAIN_BOUND_S}s)")
    balance = summary.get("balance_check", {})
    assert isinstance(balance, dict)
    if balance.get("passed") is not True:
        problems.append(f"the demo's own balance check failed: {balance}")
    ledger = AckLedger()
    for key in acknowledged:
        ledger.acknowledged(Request(key))
    verdict = await ledger.verify(dsn, total_before=int(balance.get("before", 0)))
    operations = summary.get("operations", {})
    assert isinstance(operations, dict)
    ok = sum(int(v["ok"]) for v in operations.values())
    failed = sum(int(v["failed"]) for v in operations.values())
    notes = [
        f"exit {process.returncode} {drained:.2f}s after SIGTERM (recovery = time to exit)",
        f"{len(acknowledged)} acknowledged transfers, errors {summary.get('errors')}",
    ]
    if not acknowledged:
        problems.append("the demo acknowledged nothing")
    return report(
        "sigterm-demo",
        loads=[],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=drained,
        notes=notes,
        problems=problems,
        extra_ok=ok,
        extra_failed_clean=failed,
    )
