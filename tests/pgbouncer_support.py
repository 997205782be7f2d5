"""A throwaway PgBouncer in transaction pooling mode, in front of a throwaway PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.postgres.binaries import server_user
from adapters.postgres.cluster import free_port
from adapters.postgres.files import make_runtime_dir, write_private


def find_pgbouncer() -> tuple[Path, dict[str, str]] | None:
    """The PgBouncer binary and the environment it needs, or ``None`` when there is none."""
    # Where `make pgbouncer` unpacks it: $TMPDIR (or /tmp)/alchemy-hex-pgbouncer.
    unpacked = Path(
        os.environ.get("HEX_PGBOUNCER_DIR") or Path(tempfile.gettempdir()) / "alchemy-hex-pgbouncer"
    )
    candidates = [shutil.which("pgbouncer"), "/usr/sbin/pgbouncer", str(unpacked / "usr/sbin/pgbouncer")]
    for candidate in filter(None, candidates):
        if os.access(candidate, os.X_OK):
            libs = unpacked / "usr/lib/x86_64-linux-gnu"
            env = {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": str(libs)}
            return Path(candidate), env
    return None


@contextmanager
def pgbouncer(binary: Path, env: dict[str, str], *, server_port: int, pool_size: int = 4) -> Iterator[int]:
    """Run PgBouncer (transaction mode, trust auth) on a free loopback port; yields the port."""
    owner = server_user()
    runtime = make_runtime_dir(owner=owner)
    port = free_port()
    config = f"""
[databases]
* = host=127.0.0.1 port={server_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {runtime}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {runtime}/pgbouncer.log
pidfile = {runtime}/pgbouncer.pid
"""
    write_private(runtime / "users.txt", '"postgres" ""\n', owner=owner)
    ini = write_private(runtime / "pgbouncer.ini", config, owner=owner)
    user = {} if owner is None else {"user": owner.uid, "group": owner.gid}
    # It logs to its own file (read on failure), so no pipe is left to close.
    process = subprocess.Popen(  # type: ignore[call-overload]  # user/group only when root
        [str(binary), str(ini)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user
    )
    try:
        _wait_for_port(port, process, runtime / "pgbouncer.log")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(runtime, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-500:] if log.exists() else "(no log)"
            raise RuntimeError(f"pgbouncer exited with status {process.returncode}: {tail}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("pgbouncer did not listen in time")
