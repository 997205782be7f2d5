"""A throwaway ``redis-server`` on a free loopback port, from the machine's binary; never the shared one.

``RedisServer`` starts it with no persistence and no other client, and can kill it (SIGKILL, as a
crash), start it again on the same port (an empty server: no keys, no scripts), or pause every
client (``CLIENT PAUSE``) from an admin connection of its own.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Self

_START_TIMEOUT_S: Final = 10.0


def redis_server_binary() -> str | None:
    """The machine's ``redis-server``, if it has one."""
    return shutil.which("redis-server")


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1, optionally with a password."""

    def __init__(self, *, password: str | None = None, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed on this machine")
        self.binary = binary
        self.password = password
        self.port = port or free_port()
        self._directory = Path(tempfile.mkdtemp(prefix="hex-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, *, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._directory),
            "--logfile", str(self._directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (self._directory / "redis.log").read_text(errors="replace")[-2000:]
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start: {log}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would end it, and wait for it to be gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def command(self, *args: str) -> bytes:
        """Send one command on a fresh admin connection and return the raw reply (RESP)."""
        with closing(socket.create_connection(("127.0.0.1", self.port), timeout=2.0)) as sock:
            if self.password:
                sock.sendall(_resp("AUTH", self.password))
                sock.recv(64)
            sock.sendall(_resp(*args))
            return sock.recv(65536)

    def pause(self, seconds: float) -> None:
        """Make the server hold every client's commands for ``seconds`` (``CLIENT PAUSE ... ALL``)."""
        reply = self.command("CLIENT", "PAUSE", str(round(seconds * 1000)), "ALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"CLIENT PAUSE failed: {reply!r}")

    def unpause(self) -> None:
        self.command("CLIENT", "UNPAUSE")

    def command_calls(self, command: str) -> int:
        """How many times the server ran ``command`` (``INFO commandstats``), e.g. ``evalsha``."""
        info = self.command("INFO", "commandstats").decode()
        for line in info.splitlines():
            if line.startswith(f"cmdstat_{command.lower()}:"):
                return int(line.split("calls=", 1)[1].split(",", 1)[0])
        return 0

    def _answers(self) -> bool:
        try:
            return self.command("PING").startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
        shutil.rmtree(self._directory, ignore_errors=True)


def _resp(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@contextmanager
def redis_server(*, password: str | None = None) -> Iterator[RedisServer]:
    """A started throwaway server; without ``redis-server`` on the machine this fails, never skips."""
    with RedisServer(password=password) as server:
        yield server
