"""Throwaway PostgreSQL servers on free loopback ports, for ``make demo``, the CLI and test fixtures.

Demo and test tooling (see the package docstring): never use one for data you keep.

Each cluster owns a private runtime directory holding its Unix socket, short-lived secret files and,
by default, its data directory. Settings favour speed over durability (``fsync=off``): never keep
data you care about in one. Replicas, promotion, kills and restarts are there for chaos tests.
"""

from __future__ import annotations

import shutil
import socket
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Self
from urllib.parse import quote

from adapters.postgres import files
from adapters.postgres.binaries import PgBinaries, find_binaries, run_tool, server_user, usable_by
from adapters.postgres.errors import ClusterError
from adapters.postgres.files import LOOPBACK
from adapters.postgres.pg_ctl import PgCtl, PortTakenError, StopMode
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

_LOG_FILE: Final = "server.log"
_POLL_INTERVAL_S: Final = 0.05
_PORT_ATTEMPTS: Final = 3


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
    As root, the server binaries run as ``postgres`` (else ``nobody``), which owns the directories.
    Every wait is bounded by ``startup_timeout_s`` or ``command_timeout_s``. Not thread-safe.
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
        files.check_settings(settings or {})
        if password is not None and (not password or "\n" in password or "\r" in password):
            raise ClusterError("a cluster password must be one non-empty line")
        self._user = server_user()
        self.binaries = usable_by(binaries, self._user)
        self.superuser = superuser
        self._password = password
        self._settings = dict(settings or {})
        self.startup_timeout_s = startup_timeout_s
        self.command_timeout_s = command_timeout_s
        # A port we picked ourselves may be taken before the server binds it; see start().
        self._may_move_port = port is None
        self.port = free_port() if port is None else port
        self._runtime_dir = files.make_runtime_dir(owner=self._user)
        self.socket_dir = self._runtime_dir / "socket"
        files.prepare_empty_dir(self.socket_dir, owner=self._user)
        self.data_dir = self._runtime_dir / "data" if data_dir is None else data_dir.absolute()
        self._pg_ctl = PgCtl(
            binaries=self.binaries, user=self._user, data_dir=self.data_dir, timeout_s=startup_timeout_s
        )
        self._finalizer = weakref.finalize(self, _clean_up, self._pg_ctl, self._runtime_dir)

    def __repr__(self) -> str:
        return f"PostgresCluster(data_dir='{self.data_dir}', port={self.port})"

    @property
    def settings(self) -> Mapping[str, str]:
        """The extra server settings given at construction."""
        return MappingProxyType(self._settings)

    @property
    def log_file(self) -> Path:
        """The server log, inside the data directory."""
        return self.data_dir / _LOG_FILE

    def dsn(self, database: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        """``postgresql://user[:password]@127.0.0.1:PORT/database``; the superuser gets the password."""
        user = self.superuser if user is None else user
        if password is None and user == self.superuser:
            password = self._password
        secret = "" if password is None else ":" + quote(password, safe="")
        where = f"{LOOPBACK}:{self.port}/{quote(database, safe='')}"
        return f"postgresql://{quote(user, safe='')}{secret}@{where}"

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
        files.prepare_empty_dir(self.data_dir, owner=self._user)
        initdb: list[str | Path] = [self.binaries.tool("initdb"), "-D", self.data_dir, "-U", self.superuser]
        initdb += ["-E", "UTF8", "--no-locale", "--no-sync"]
        if self._password is None:
            self._run([*initdb, "--auth=trust"])
        else:
            # The socket directory is private to the server user, so local connections can be trusted.
            pwfile_path = self._runtime_dir / "pwfile"
            with files.secret_file(pwfile_path, self._password + "\n", owner=self._user) as pwfile:
                self._run([*initdb, "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"])
        hba = files.render_hba(password_required=self._password is not None)
        files.write_private(self.data_dir / "pg_hba.conf", hba, owner=self._user)
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\ninclude = '{files.SETTINGS_FILE}'\n")
        self._write_settings()

    def start(self) -> None:
        """Start the server and wait until it accepts connections; nothing to do when it runs."""
        if self.is_running():
            return
        attempts = _PORT_ATTEMPTS if self._may_move_port else 1
        for attempt in range(1, attempts + 1):
            try:
                self._pg_ctl.start(log_file=self.log_file)
                break
            except PortTakenError:
                if attempt == attempts:
                    raise
                self.port = free_port()
                self._write_settings()
        # Once clients may hold DSNs with this port, it must not change under them.
        self._may_move_port = False

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server with pg_ctl's ``smart``, ``fast`` or ``immediate`` mode, if it runs."""
        if self.is_running():
            self._pg_ctl.stop(mode)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop the server with ``mode``, then start it again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, like a crash; the next start() runs crash recovery."""
        kill_postmaster(self.data_dir, grace_s=self.startup_timeout_s)

    def promote(self) -> None:
        """Turn this standby into a primary and wait until it accepts writes."""
        self._pg_ctl.promote()
        self._wait_for("out of recovery", lambda: self.query("SELECT pg_is_in_recovery()") == "f")

    def query(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser over the private socket; the unaligned output, stripped."""
        psql = [str(self.binaries.tool("psql")), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]
        target = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", self.superuser, "-d", database]
        return self._run([*psql, *target, "-c", sql]).strip()

    def create_replica(
        self,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> PostgresCluster:
        """A started streaming replica of this running primary, already in recovery; destroy it too.

        It keeps this cluster's settings (a standby needs ``max_connections`` and the like at least as
        high as its primary's), updated with ``settings``.
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
        files.prepare_empty_dir(self.data_dir, owner=self._user)
        extra_env: dict[str, str] = {}
        if self._password is not None:
            # -R writes "passfile=..." (never the password) into primary_conninfo, so the file stays
            # in the runtime directory for the walreceiver until destroy().
            line = files.pgpass_line(port=primary.port, user=self.superuser, password=self._password)
            pgpass = files.write_private(self._runtime_dir / "pgpass", line, owner=self._user)
            extra_env["PGPASSFILE"] = str(pgpass)
        basebackup = [str(self.binaries.tool("pg_basebackup")), "-D", str(self.data_dir), "-R"]
        options = ["-X", "stream", "--checkpoint=fast", "--no-sync", "-w", "-U", self.superuser]
        source = ["-h", LOOPBACK, "-p", str(primary.port)]
        self._run([*basebackup, *options, *source], extra_env=extra_env)
        self.log_file.unlink(missing_ok=True)  # the primary's log came along
        self._write_settings()

    def _run(self, args: Sequence[str | Path], *, extra_env: Mapping[str, str] | None = None) -> str:
        timeout_s = self.command_timeout_s
        return run_tool(
            args, binaries=self.binaries, user=self._user, timeout_s=timeout_s, extra_env=extra_env
        )

    def _wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise ClusterError(f"server {self.data_dir} not {what} after {self.startup_timeout_s:.0f}s")
            time.sleep(_POLL_INTERVAL_S)

    def _write_settings(self) -> None:
        text = files.render_settings(self._settings, port=self.port, socket_dir=self.socket_dir)
        files.write_private(self.data_dir / files.SETTINGS_FILE, text, owner=self._user)


def start_cluster(
    *,
    binaries: PgBinaries | None = None,
    port: int | None = None,
    password: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> PostgresCluster:
    """An initialised, running cluster with a fresh data directory; the caller must destroy() it."""
    binaries = find_binaries() if binaries is None else binaries
    return PostgresCluster(binaries=binaries, port=port, password=password, settings=settings).__enter__()


def _clean_up(pg_ctl: PgCtl, runtime_dir: Path) -> None:
    # A module function, not a method: the finalizer must not keep the cluster alive.
    pg_ctl.stop_at_once()
    for path in (pg_ctl.data_dir, runtime_dir):
        shutil.rmtree(path, ignore_errors=True)
