"""Freezing a throwaway server: SIGSTOP its postmaster and every backend, as a hung host would."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.postgres.cluster import PostgresCluster
from adapters.postgres.processes import children_of, live_postmaster


def _processes(cluster: PostgresCluster) -> list[int]:
    pid = live_postmaster(cluster.data_dir)
    if pid is None:
        raise RuntimeError(f"{cluster!r} is not running")
    return [pid, *children_of(pid)]


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return "?"
    return stat.rpartition(")")[2].split()[0]


def _signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


@contextmanager
def frozen(cluster: PostgresCluster) -> Iterator[None]:
    """The server's processes stopped (SIGSTOP) for the block, continued (SIGCONT) after it.

    Only for a cluster of the test's own: never the session's shared server.
    """
    # The postmaster first: frozen, it cannot fork a backend we would miss.
    pid = live_postmaster(cluster.data_dir)
    if pid is None:
        raise RuntimeError(f"{cluster!r} is not running")
    _signal_all([pid], signal.SIGSTOP)
    # SIGSTOP takes effect asynchronously: a fork the postmaster was in the middle of may still
    # produce a child after the signal was sent. Wait for it to be stopped, then look twice.
    for _ in range(200):
        if _state(pid) == "T":
            break
        time.sleep(0.005)
    pids = _processes(cluster)
    _signal_all(pids, signal.SIGSTOP)
    late = [p for p in _processes(cluster) if p not in pids]
    _signal_all(late, signal.SIGSTOP)
    pids += late
    try:
        yield
    finally:
        _signal_all(pids, signal.SIGCONT)
