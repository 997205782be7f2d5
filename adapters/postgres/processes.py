"""The postmaster of a data directory as an OS process: whether it is alive, and crashing it.

Linux-specific: children are found through ``/proc``. PostgreSQL backends call ``setsid()``, so
they are not in the postmaster's process group and ``killpg`` would miss them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Final

from adapters.postgres.errors import ClusterError

_PROC: Final = Path("/proc")
_PID_FILE: Final = "postmaster.pid"
_POLL_INTERVAL_S: Final = 0.02
_IPC_RMID: Final = 0  # <sys/ipc.h> on Linux


def live_postmaster(data_dir: Path) -> int | None:
    """The pid in ``data_dir/postmaster.pid`` if that process is alive, else ``None``."""
    try:
        pid = int(_pid_file_lines(data_dir)[0])
    except (OSError, ValueError, IndexError):
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
    """SIGKILL the live postmaster of ``data_dir`` and all its children, then clear what they left.

    Killing the children too makes the crash immediate: orphaned backends would otherwise keep
    serving open connections and hold the shared memory that blocks the next start. The next start
    still runs crash recovery, which depends on ``pg_control``, not on ``postmaster.pid``.
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
    while survivors := [victim for victim in victims if is_alive(victim)]:
        if time.monotonic() > deadline:
            raise ClusterError(f"processes {survivors} of {data_dir} survived SIGKILL for {grace_s:.0f}s")
        time.sleep(_POLL_INTERVAL_S)
    _clear_crashed_server(data_dir)


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


def _clear_crashed_server(data_dir: Path) -> None:
    # The killed postmaster may stay a zombie until init reaps it (about a second here, never under
    # some container inits), and PostgreSQL takes a zombie's lock files for a live server: remove
    # them. Nothing is attached to the SysV segment any more, so remove it too, else a destroy()
    # right after kill() would leak it.
    try:
        lines = _pid_file_lines(data_dir)
    except OSError:
        return
    with contextlib.suppress(ValueError, IndexError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmctl(ctypes.c_int(int(lines[6].split()[1])), ctypes.c_int(_IPC_RMID), None)
    with contextlib.suppress(IndexError):
        socket = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}"
        socket.with_name(socket.name + ".lock").unlink(missing_ok=True)
    (data_dir / _PID_FILE).unlink(missing_ok=True)


def _pid_file_lines(data_dir: Path) -> list[str]:
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, "shmkey shmid", status.
    return (data_dir / _PID_FILE).read_text(encoding="utf-8").splitlines()


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
