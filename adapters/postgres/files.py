"""The files and directories of a throwaway server: settings, ``pg_hba.conf``, secrets, scratch space.

Everything is private to the server user, which also owns it when we run as root. Only paths the
cluster creates (or the data directory it is given) change owner; parent directories never do.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Final

from adapters.postgres.binaries import ServerUser
from adapters.postgres.errors import ClusterError

LOOPBACK: Final = "127.0.0.1"
SETTINGS_FILE: Final = "hex.conf"
_SHM: Final = Path("/dev/shm")  # noqa: S108 - a private mkdtemp() directory is made inside it
_SETTING_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_MANAGED_SETTINGS: Final = frozenset({"listen_addresses", "port", "unix_socket_directories"})
DEFAULT_SETTINGS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # Throwaway servers: losing data in a host crash is fine, waiting for disks is not.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        # Ready to be the primary of a streaming replica without a restart.
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "hot_standby": "on",
        # Segments as files in the data directory rather than /dev/shm/PostgreSQL.*, which a
        # killed server would leak; destroy() removes the data directory with them.
        "dynamic_shared_memory_type": "mmap",
    }
)


def check_settings(settings: Mapping[str, str]) -> None:
    """Refuse names and values that could break out of their line, and settings the cluster owns."""
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name) or any(char in value for char in "\r\n\0"):
            raise ClusterError(f"invalid server setting {name!r}")
        if name in _MANAGED_SETTINGS:
            raise ClusterError(f"server setting {name!r} is managed by the cluster (use port=...)")


def render_settings(settings: Mapping[str, str], *, port: int, socket_dir: Path) -> str:
    """The contents of the settings file that ``postgresql.conf`` includes."""
    managed = {"listen_addresses": LOOPBACK, "port": str(port), "unix_socket_directories": str(socket_dir)}
    merged = {**DEFAULT_SETTINGS, **settings, **managed}
    lines = [f"{name} = {_conf_quote(value)}" for name, value in merged.items()]
    return (
        "# Written by alchemy-hex for this server only; a replica gets its own.\n" + "\n".join(lines) + "\n"
    )


def render_hba(*, password_required: bool) -> str:
    """``pg_hba.conf``: the private socket is trusted; loopback TCP needs the password if there is one."""
    method = "scram-sha-256" if password_required else "trust"
    rules = [
        "local all all trust",
        "local replication all trust",
        f"host all all {LOOPBACK}/32 {method}",
        f"host replication all {LOOPBACK}/32 {method}",
    ]
    return "\n".join(rules) + "\n"


def pgpass_line(*, port: int, user: str, password: str) -> str:
    """One ``.pgpass`` line for any database at 127.0.0.1:``port``."""
    return f"{LOOPBACK}:{port}:*:{_pgpass_escape(user)}:{_pgpass_escape(password)}\n"


def write_private(path: Path, content: str, *, owner: ServerUser | None) -> Path:
    """Write a file only ``owner`` (and root) can read; ``None`` means the current user."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        file.write(content)
    return path


@contextmanager
def secret_file(path: Path, content: str, *, owner: ServerUser | None) -> Iterator[Path]:
    """A private file that exists only inside the ``with`` block."""
    try:
        yield write_private(path, content, owner=owner)
    finally:
        path.unlink(missing_ok=True)


def make_runtime_dir(*, owner: ServerUser | None) -> Path:
    """A fresh private directory, in ``/dev/shm`` when usable: initdb and start-up run 2-3x faster there."""
    parent = _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix="hex-pg-", dir=parent))
    hand_over(path, owner=owner)
    return path


def prepare_empty_dir(path: Path, *, owner: ServerUser | None) -> None:
    """Create ``path`` (mode 700) if needed, check it is empty, and give it to ``owner``."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise ClusterError(f"directory {path} is not empty")
    hand_over(path, owner=owner)


def hand_over(path: Path, *, owner: ServerUser | None) -> None:
    """Give a directory the cluster created, or its data directory, to ``owner``."""
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


def read_from(path: Path, offset: int) -> str:
    """The text of ``path`` after byte ``offset``, for error messages."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def _conf_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


def _pgpass_escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")
