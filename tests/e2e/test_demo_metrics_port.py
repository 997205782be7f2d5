"""``alchemy-hex demo --metrics-port``: the pool metrics scraped from the running demo, on loopback."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request

from adapters.postgres.cluster import free_port
from tests.support import CLI, create_database

#: Scrape attempts, 0.2 s apart, while the demo starts its server and runs.
_ATTEMPTS = 150


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as response:
            return str(response.read().decode())
    except OSError:
        return None


def test_the_demo_serves_its_metrics_while_it_runs(admin_dsn: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    env["DATABASE_URL"] = create_database(admin_dsn)
    demo = subprocess.Popen(
        [CLI, "demo", "--json", "--seconds", "6", "--workers", "4", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        page = None
        for _ in range(_ATTEMPTS):
            page = _scrape(port)
            if page and "alchemy_hex_use_case_duration_seconds_count" in page:
                break
            time.sleep(0.2)
        out, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
        demo.wait()

    assert demo.returncode == 0, err[-2000:]
    assert page is not None, "the metrics port never answered"
    assert 'db_client_connection_count{db_client_connection_pool_name="writer"' in page
    assert "alchemy_hex_use_case_duration_seconds_count" in page
    assert '"balance_check"' in out
