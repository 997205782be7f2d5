"""Throwaway PostgreSQL servers on free loopback ports, for ``make demo``, the CLI and test fixtures.

Each cluster owns a private runtime directory (in ``/dev/shm`` when possible: initdb and start-up
run two to three times faster on tmpfs) holding its Unix socket, short-lived secret files and, by
default, its data directory. Settings favour speed over durability (``fsync=off``); never keep data
you care about in one. Streaming replicas, promotion, kills and restarts are supported for chaos tests.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Literal, Self
from urllib.parse import quote

from adapters.postgres.binaries import (
    ClusterError,
    PgBinaries,
    ServerUser,
    find_binaries,
    run_tool,
    server_user,
    tail,
    usable_by,
)
from adapters.postgres.processes import kill_postmaster, live_postmaster

__all__ = [
    "ClusterError",
    "PgBinaries",
    "PostgresCluster",
    "StopMode",
    "find_binaries",
    "free_port",
    "start_cluster",
]

StopMode = Literal["smart", "fast", "immediate"]

LOOPBACK: Final = "127.0.0.1"
_CONF_FILE: Final = "hex.conf"
_LOG_FILE: Final = "server.log"
_GRACE_S: Final = 10.0
_POLL_INTERVAL_S: Final = 0.05
_PORT_ATTEMPTS: Final = 3
_SETTING_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_MANAGED_SETTINGS: Final = frozenset({"listen_addresses", "port", "unix_socket_directories"})
_DEFAULT_SETTINGS: Final[Mapping[str, str]] = MappingProxyType(
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
    }
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One throwaway PostgreSQL server listening only on 127.0.0.1.

    ``with PostgresCluster(binaries=find_binaries()) as pg:`` initialises and starts it; leaving the
    block destroys it (server stopped, data and runtime directories removed). A cluster still alive
    when it is garbage collected or the interpreter exits is destroyed too, like a TemporaryDirectory.
    As root, the server binaries run as ``postgres`` (or ``nobody``), which owns the directories.
    Methods block; timeouts are bounded by ``startup_timeout_s`` and ``command_timeout_s``. Not
    thread-safe.
    """

    def __init__(
        self,
        *,
        binaries: PgBinaries,
        data_dir: Path | None = None,
        port: int | None = None,
        superuser: str = "postgres",
        password: str | None = None,
        settings: Mapping[str, str] | None = None,
        startup_timeout_s: float = 30.0,
        command_timeout_s: float = 120.0,
    ) -> None:
        _check_settings(settings or {})
        if password is not None and (not password or "\n" in password or "\r" in password):
            raise ClusterError("a cluster password must be one non-empty line")
        self._user = server_user()
        self.binaries = usable_by(binaries, self._user)
        self.superuser = superuser
        self._password = password
        self._settings = dict(settings or {})
        self.startup_timeout_s = startup_timeout_s
        self.command_timeout_s = command_timeout_s
        # A port we picked ourselves may be taken again before the server binds it; see start().
        self._may_move_port = port is None
        self.port = free_port() if port is None else port
        self._runtime_dir = Path(tempfile.mkdtemp(prefix="hex-pg-", dir=_scratch_root()))
        self._hand_over(self._runtime_dir)
        self.socket_dir = self._runtime_dir / "socket"
        self.socket_dir.mkdir(mode=0o700)
        self._hand_over(self.socket_dir)
        self.data_dir = self._runtime_dir / "data" if data_dir is None else data_dir.absolute()
        self._finalizer = weakref.finalize(
            self, _clean_up, self.binaries, self._user, self.data_dir, self._runtime_dir, command_timeout_s
        )

    def __repr__(self) -> str:
        return f"PostgresCluster(data_dir={str(self.data_dir)!r}, port={self.port}, version={self.binaries.version})"

    @property
    def settings(self) -> Mapping[str, str]:
        """The extra server settings given at construction."""
        return MappingProxyType(self._settings)

    @property
    def log_file(self) -> Path:
        """The server log, inside the data directory."""
        return self.data_dir / _LOG_FILE

    def dsn(self, database: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        """``postgresql://user[:password]@127.0.0.1:PORT/database``; the cluster's password for its superuser."""
        user = self.superuser if user is None else user
        if password is None and user == self.superuser:
            password = self._password
        secret = "" if password is None else ":" + quote(password, safe="")
        return (
            f"postgresql://{quote(user, safe='')}{secret}@{LOOPBACK}:{self.port}/{quote(database, safe='')}"
        )

    def is_initialized(self) -> bool:
        """Whether the data directory holds a cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        """Whether the postmaster named in the data directory's ``postmaster.pid`` is alive."""
        return live_postmaster(self.data_dir) is not None

    def init(self) -> None:
        """Create the cluster with initdb and write its settings and ``pg_hba.conf``."""
        if self.is_initialized():
            raise ClusterError(f"{self.data_dir} already holds a cluster")
        self._prepare_empty_dir(self.data_dir)
        initdb = [self.binaries.tool("initdb"), "-D", self.data_dir, "-U", self.superuser]
        initdb += ["-E", "UTF8", "--no-locale", "--no-sync"]
        if self._password is None:
            self._run([*initdb, "--auth=trust"])
        else:
            # The socket directory is private to the server user, so trusting local connections is safe.
            with self._secret_file("pwfile", self._password + "\n") as pwfile:
                self._run([*initdb, "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"])
        self._write_hba()
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\ninclude = '{_CONF_FILE}'\n")
        self._write_settings()

    def start(self) -> None:
        """Start the server and wait until it accepts connections; nothing to do when it runs."""
        if self.is_running():
            return
        attempts = _PORT_ATTEMPTS if self._may_move_port else 1
        for attempt in range(1, attempts + 1):
            try:
                self._pg_ctl_start()
                break
            except _PortTakenError:
                if attempt == attempts:
                    raise
                self.port = free_port()
                self._write_settings()
        # Once clients may hold DSNs with this port, it must not change under them.
        self._may_move_port = False

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server (pg_ctl's ``smart``, ``fast`` or ``immediate``); nothing to do when stopped."""
        if not self.is_running():
            return
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop the server with ``mode``, then start it again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, like a crash; the next start() runs crash recovery."""
        kill_postmaster(self.data_dir, grace_s=_GRACE_S)

    def promote(self) -> None:
        """Turn this standby into a primary and wait until it accepts writes."""
        self._pg_ctl("promote")
        self._wait_for("out of recovery", lambda: self.query("SELECT pg_is_in_recovery()") == "f")

    def query(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser over the private socket; its unaligned output, stripped."""
        psql = [self.binaries.tool("psql"), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]
        target = ["-h", self.socket_dir, "-p", str(self.port), "-U", self.superuser, "-d", database]
        return self._run([*psql, *target, "-c", sql]).strip()

    def create_replica(
        self,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> PostgresCluster:
        """A started streaming replica of this running primary, already in recovery; destroy it too.

        It inherits this cluster's settings (a standby needs ``max_connections`` and the like at least
        as high as its primary's), updated with ``settings``.
        """
        if not self.is_running():
            raise ClusterError(f"primary {self.data_dir} must be running to be replicated")
        replica = PostgresCluster(
            binaries=self.binaries,
            data_dir=data_dir,
            port=port,
            superuser=self.superuser,
            password=self._password,
            settings={**self._settings, **(settings or {})},
            startup_timeout_s=self.startup_timeout_s,
            command_timeout_s=self.command_timeout_s,
        )
        try:
            replica._clone(self)
            replica.start()
            replica._wait_for("in recovery", lambda: replica.query("SELECT pg_is_in_recovery()") == "t")
        except BaseException:
            replica.destroy()
            raise
        return replica

    def destroy(self) -> None:
        """Stop the server at once if it runs and remove its data and runtime directories; idempotent."""
        self._finalizer()
        if self.data_dir.exists() or self._runtime_dir.exists():
            raise ClusterError(f"could not remove {self.data_dir} or {self._runtime_dir}")

    def __enter__(self) -> Self:
        try:
            if not self.is_initialized():
                self.init()
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    def _clone(self, primary: PostgresCluster) -> None:
        self._prepare_empty_dir(self.data_dir)
        extra_env: dict[str, str] = {}
        if self._password is not None:
            # -R writes "passfile=..." (never the password) into primary_conninfo, so the file stays
            # in the runtime directory for the walreceiver until destroy().
            line = f"{LOOPBACK}:{primary.port}:*:{_pgpass_escape(self.superuser)}:{_pgpass_escape(self._password)}\n"
            extra_env["PGPASSFILE"] = str(self._write_private(self._runtime_dir / "pgpass", line))
        basebackup = [self.binaries.tool("pg_basebackup"), "-D", self.data_dir, "-R", "-X", "stream"]
        basebackup += ["--checkpoint=fast", "--no-sync", "-w"]
        source = ["-h", LOOPBACK, "-p", str(primary.port), "-U", self.superuser]
        self._run([*basebackup, *source], extra_env=extra_env)
        self.log_file.unlink(missing_ok=True)  # the primary's log came along
        self._write_settings()

    def _pg_ctl_start(self) -> None:
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        try:
            self._pg_ctl("start", "-l", self.log_file)
        except ClusterError as exc:
            # pg_ctl may give up while the postmaster is still starting: leave nothing behind.
            kill_postmaster(self.data_dir, grace_s=_GRACE_S)
            log = self._read_log(log_offset)
            error = _PortTakenError if "Address already in use" in log else ClusterError
            where = f"server {self.data_dir} on port {self.port}"
            raise error(f"{where} did not start: {exc}\n--- server log ---\n{tail(log)}") from exc

    def _pg_ctl(self, action: str, *args: str | Path) -> None:
        wait = ["-w", "-t", str(math.ceil(self.startup_timeout_s))]
        command = [self.binaries.tool("pg_ctl"), action, *wait, "-D", self.data_dir, *args]
        self._run(command, timeout_s=self.startup_timeout_s + _GRACE_S)

    def _run(
        self,
        args: list[str | Path],
        *,
        timeout_s: float | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> str:
        timeout_s = self.command_timeout_s if timeout_s is None else timeout_s
        return run_tool(
            args, binaries=self.binaries, user=self._user, timeout_s=timeout_s, extra_env=extra_env
        )

    def _wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"server {self.data_dir} was not {what} within {self.startup_timeout_s:.0f}s"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no server log)"

    def _write_settings(self) -> None:
        managed = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        merged = {**_DEFAULT_SETTINGS, **self._settings, **managed}
        lines = [f"{name} = {_conf_quote(value)}" for name, value in merged.items()]
        header = "# Written by alchemy-hex for this server only; a replica gets its own copy.\n"
        self._write_private(self.data_dir / _CONF_FILE, header + "\n".join(lines) + "\n")

    def _write_hba(self) -> None:
        method = "trust" if self._password is None else "scram-sha-256"
        rules = [
            "local all all trust",
            "local replication all trust",
            f"host all all {LOOPBACK}/32 {method}",
            f"host replication all {LOOPBACK}/32 {method}",
        ]
        self._write_private(self.data_dir / "pg_hba.conf", "\n".join(rules) + "\n")

    @contextmanager
    def _secret_file(self, name: str, content: str) -> Iterator[Path]:
        path = self._write_private(self._runtime_dir / name, content)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _write_private(self, path: Path, content: str) -> Path:
        """Write a file only the server user (and root) can read."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            if self._user is not None:
                os.fchown(fd, self._user.uid, self._user.gid)
            file.write(content)
        return path

    def _prepare_empty_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise ClusterError(f"data directory {path} is not empty")
        self._hand_over(path)

    def _hand_over(self, path: Path) -> None:
        # Only directories this cluster created or will own; never a parent directory.
        if self._user is not None:
            os.chown(path, self._user.uid, self._user.gid)


class _PortTakenError(ClusterError):
    """Another process bound the port between free_port() and the server's start."""


def start_cluster(
    *,
    binaries: PgBinaries | None = None,
    port: int | None = None,
    password: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> PostgresCluster:
    """An initialised, running cluster with a fresh data directory; the caller must destroy() it."""
    cluster = PostgresCluster(
        binaries=find_binaries() if binaries is None else binaries,
        port=port,
        password=password,
        settings=settings,
    )
    return cluster.__enter__()


def _clean_up(
    binaries: PgBinaries, user: ServerUser | None, data_dir: Path, runtime_dir: Path, timeout_s: float
) -> None:
    if live_postmaster(data_dir) is not None:
        stop = [binaries.tool("pg_ctl"), "stop", "-w", "-m", "immediate", "-D", data_dir]
        try:
            run_tool(stop, binaries=binaries, user=user, timeout_s=timeout_s)
        except ClusterError:
            kill_postmaster(data_dir, grace_s=_GRACE_S)
    for path in (data_dir, runtime_dir):
        shutil.rmtree(path, ignore_errors=True)


def _scratch_root() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def _check_settings(settings: Mapping[str, str]) -> None:
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name) or any(char in value for char in "\r\n\0"):
            raise ClusterError(f"invalid server setting {name!r}")
        if name in _MANAGED_SETTINGS:
            raise ClusterError(f"server setting {name!r} is managed by the cluster (use port=...)")


def _conf_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


def _pgpass_escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")
