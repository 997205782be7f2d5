"""The demo, as run by an operator, while one of its two replicas is stopped half-way."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from adapters.postgres.cluster import PostgresCluster
from tests.replication import Replicated, replicated_servers
from tests.support import CLI

pytestmark = pytest.mark.replication


@pytest.fixture
def servers() -> Iterator[Replicated]:
    with replicated_servers([{}, {}]) as started:
        yield started


def _serving_reads(replica: PostgresCluster) -> bool:
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'alchemy-hex'"
    return int(replica.query(sessions)) > 0


def test_a_replica_stopped_during_the_demo_costs_no_failed_read(servers: Replicated) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    env |= {"DATABASE_URL": servers.primary.dsn(), "DATABASE_REPLICA_URLS": ",".join(servers.replica_dsns)}
    demo = subprocess.Popen(
        [CLI, "demo", "--json", "--seconds", "4", "--workers", "8", "--accounts", "10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _serving_reads(servers.replicas[0]):
            assert demo.poll() is None, "the demo ended before reading from replica-1"
            assert time.monotonic() < deadline, "the demo never read from replica-1"
            time.sleep(0.05)
        time.sleep(1.0)
        servers.replicas[0].stop("fast")
        out, err = demo.communicate(timeout=60)
    finally:
        demo.kill()

    assert demo.returncode == 0, err[-2000:]
    summary = json.loads(out)
    reads = summary["reads"]
    print(
        f"\nreads {summary['operations']['read']}, by target {reads['by_target']}, routes {reads['routes']}"
    )
    assert summary["operations"]["read"]["failed"] == 0
    assert summary["balance_check"]["passed"] is True
    assert reads["by_target"]["replica-1"] > 0
    assert reads["by_target"]["replica-2"] > 0
    stopped, alive = reads["replicas"]
    assert (stopped["healthy"], stopped["ejections"]) == (False, 1)
    assert stopped["ejected"] in {"unreachable", "connect_failed"}
    assert alive["healthy"] is True
