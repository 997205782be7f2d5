"""A real Prometheus server scrapes the service's metrics port and answers a query for the pool series."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from adapters.postgres.cluster import free_port
from tests.support import make_settings
from tests.telemetry_support import observed_container

#: Polls of Prometheus's query API, 0.25 s apart: it scrapes every 0.5 s, so a few suffice.
_POLLS = 80


def find_prometheus() -> Path | None:
    """Debian's binary where ``make prometheus`` unpacks it, or one on the PATH."""
    unpacked = Path(
        os.environ.get("HEX_PROMETHEUS_DIR") or Path(tempfile.gettempdir()) / "alchemy-hex-prometheus"
    )
    for candidate in (unpacked / "usr/bin/prometheus", shutil.which("prometheus")):
        if candidate is not None and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=2.0) as response:  # loopback, our own server
        answer = json.load(response)
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


async def test_prometheus_scrapes_the_metrics_port_and_answers_for_the_pool_series(database_url: str) -> None:
    binary = find_prometheus()
    if binary is None:
        pytest.skip(
            "no Prometheus server: `make prometheus` unpacks Debian's package (apt-get download failed?)"
        )
    async with observed_container(make_settings(database_url)) as observed:
        account = await observed.container.open_account()("pat")
        await observed.container.get_balance()(account)
        metrics_port, web_port = free_port(), free_port()
        server = await observed.telemetry.serve(metrics_port)
        with tempfile.TemporaryDirectory(prefix="hex-prometheus-") as work:
            config = Path(work) / "prometheus.yml"
            config.write_text(
                "global: {scrape_interval: 500ms, evaluation_interval: 500ms}\n"
                "scrape_configs:\n"
                "  - job_name: alchemy-hex\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
            )
            process = _start(binary, config, Path(work) / "data", web_port)
            try:
                series = await _poll(
                    web_port, 'db_client_connection_count{db_client_connection_pool_name="writer"}'
                )
            finally:
                process.terminate()
                await asyncio.to_thread(process.wait, 10)
                server.close()
                await server.wait_closed()
    states = {entry["metric"]["db_client_connection_state"] for entry in series}  # type: ignore[index]
    assert states == {"idle", "used"}
    assert {entry["metric"]["job"] for entry in series} == {"alchemy-hex"}  # type: ignore[index]


def _start(binary: Path, config: Path, data: Path, web_port: int) -> subprocess.Popen[bytes]:
    """Prometheus on loopback with ``config``; it logs nothing we read (its exit is checked by the poll)."""
    arguments = [
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{web_port}",
    ]
    return subprocess.Popen([str(binary), *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _poll(port: int, promql: str) -> list[dict[str, object]]:
    """The query's result once Prometheus has scraped a sample; bounded by ``_POLLS`` polls."""
    for _ in range(_POLLS):
        try:
            result = await asyncio.to_thread(query, port, promql)
        except (OSError, ValueError):
            result = []  # not listening yet
        if result:
            return result
        await asyncio.sleep(0.25)
    pytest.fail(f"Prometheus answered no series for {promql} after {_POLLS} polls")
