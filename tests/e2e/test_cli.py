"""The CLI end to end: the demo on the embedded server, and no password in any output."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from adapters.postgres.cluster import PostgresCluster, find_binaries
from tests.support import create_database, run_cli, with_database

PASSWORD = "Zebra-Quartz-7791-secret"


def _run(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout_s=timeout_s)


def test_the_demo_runs_on_its_own_embedded_server_and_keeps_the_books_balanced() -> None:
    done = _run("demo", "--json", "--seconds", "2", "--workers", "8", "--accounts", "10")

    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["balance_check"]["passed"] is True
    assert summary["operations"]["transfer"]["ok"] > 0
    assert summary["reads"]["served_in_recovery"] > 0, "reads should reach the streaming replica"
    assert summary["reads"]["by_target"]["replica-1"] > 0
    assert {pool["target"]: pool["in_recovery"] for pool in summary["pools"]} == {
        "writer": False,
        "replica-1": True,
    }


@pytest.fixture(scope="module")
def protected_server() -> Iterator[PostgresCluster]:
    """A server that demands a password over TCP (scram-sha-256)."""
    with PostgresCluster(binaries=find_binaries(), password=PASSWORD) as cluster:
        yield cluster


def _assert_no_password(done: subprocess.CompletedProcess[str]) -> None:
    captured = done.stdout + done.stderr
    assert PASSWORD not in captured
    assert PASSWORD[:12] not in captured


def test_no_output_of_a_working_run_contains_the_password(protected_server: PostgresCluster) -> None:
    dsn = create_database(protected_server.dsn(password=PASSWORD))
    env = {"DATABASE_URL": dsn, "HEX_LOGGING__LEVEL": "debug", "HEX_LOGGING__FORMAT": "json"}

    migrated = _run("migrate", env=env)
    demo = _run("demo", "--seconds", "1", "--workers", "4", "--accounts", "4", env=env)

    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "PASSED" in demo.stdout
    _assert_no_password(migrated)
    _assert_no_password(demo)


@pytest.mark.parametrize(
    "dsn_of",
    [
        lambda s: s.dsn(password=PASSWORD + "-wrong"),
        lambda s: with_database(s.dsn(password=PASSWORD), "no_such_database"),
        lambda s: f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres",
        lambda s: f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/postgres",
        lambda s: f"mysql://postgres:{PASSWORD}@127.0.0.1/postgres",
    ],
    ids=["wrong password", "unknown database", "unreachable host", "malformed port", "wrong scheme"],
)
def test_failures_say_what_went_wrong_without_the_password(
    protected_server: PostgresCluster, dsn_of: Callable[[PostgresCluster], str]
) -> None:
    dsn = dsn_of(protected_server)

    done = _run("migrate", env={"DATABASE_URL": dsn, "HEX_DATABASE__CONNECT_TIMEOUT_S": "2"}, timeout_s=60)

    assert done.returncode != 0
    assert "alchemy-hex: error:" in done.stderr
    _assert_no_password(done)


def test_bad_arguments_are_refused_with_a_clear_error(protected_server: PostgresCluster) -> None:
    dsn = create_database(protected_server.dsn(password=PASSWORD))
    env = {"DATABASE_URL": dsn}
    assert _run("migrate", env=env).returncode == 0

    bad_account = _run("balance", "'; DROP TABLE accounts; --", env=env)
    negative = _run("deposit", "00000000-0000-0000-0000-000000000001", "-5", "--key", "k", env=env)

    assert bad_account.returncode == 2
    assert "account id must be a UUID" in bad_account.stderr
    assert negative.returncode == 2
    assert "amount must be positive" in negative.stderr
    _assert_no_password(bad_account)
