"""Freezing a throwaway server: SIGSTOP its postmaster and every backend, as a hung host would."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from adapters.postgres.cluster import PostgresCluster
from adapters.postgres.processes import children_of, live_postmaster


def _processes(cluster: PostgresCluster) -> list[int]:
    pid = live_postmaster(cluster.data_dir)
    if pid is None:
        raise RuntimeError(f"{cluster!r} is not running")
    return [pid, *children_of(pid)]


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
    pids = _processes(cluster)
    _signal_all(pids, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_all(pids, signal.SIGCONT)
