"""The postmaster of a data directory as an OS process: is it alive, and killing it like a crash.

Linux-specific: children are found through ``/proc``. PostgreSQL backends call ``setsid()``, so
they are not in the postmaster's process group and ``killpg`` would miss them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Final

_PROC: Final = Path("/proc")
_POLL_INTERVAL_S: Final = 0.02


def live_postmaster(data_dir: Path) -> int | None:
    """The pid in ``data_dir/postmaster.pid`` if that process is alive, else ``None``."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
        pid = int(first_line)
    except (OSError, ValueError):
        return None
    return pid if is_alive(pid) else None


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except OSError:
        return _signallable(pid)
    return _stat_fields(stat)[0] not in ("Z", "X")


def kill_postmaster(data_dir: Path, *, grace_s: float) -> None:
    """SIGKILL the live postmaster of ``data_dir`` and all its children, and wait until they are gone.

    Killing the children too makes the crash immediate: orphaned backends would otherwise keep
    serving open connections and hold the shared memory that blocks the next start.
    """
    pid = live_postmaster(data_dir)
    if pid is None:
        return
    # Frozen, the postmaster cannot fork a child we would miss.
    _signal(pid, signal.SIGSTOP)
    victims = [pid, *children_of(pid)]
    for victim in victims:
        _signal(victim, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while any(is_alive(victim) for victim in victims) and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL_S)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    children: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
        except OSError:
            continue  # exited while we looked
        if int(_stat_fields(stat)[1]) == pid:
            children.append(int(entry.name))
    return children


def _stat_fields(stat: str) -> list[str]:
    # /proc/<pid>/stat is "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    return stat.rpartition(")")[2].split()


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _signallable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
