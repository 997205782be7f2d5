"""HTTP test support: the app in process with its lifespan run, and real server processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLI: Final = str(Path(sys.executable).parent / "alchemy-hex")
LOOPBACK: Final = "127.0.0.1"


class Lifespan:
    """Runs an ASGI app's lifespan protocol as a server would, keeping the state it yields.

    httpx's ``ASGITransport`` sends no lifespan events, so the tests run them here, and
    :meth:`app` hands every request a copy of the state as uvicorn does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        async def run() -> None:
            await self._app(self._scope, self._inbox.get, self._outbox.put)

        self._task = asyncio.create_task(run())
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await asyncio.wait_for(self._outbox.get(), timeout=60)
        assert reply["type"] == "lifespan.startup.complete", reply

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        reply = await asyncio.wait_for(self._outbox.get(), timeout=60)
        assert reply["type"] == "lifespan.shutdown.complete", reply
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout=10)

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._scope["state"]
        return state

    def app(self) -> ASGIApp:
        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                scope["state"] = dict(self.state)
            await self._app(scope, receive, send)

        return with_state


@dataclass
class InProcess:
    """A client on the app in this process, and the lifespan's state (the services, the health sources)."""

    client: httpx.AsyncClient
    state: dict[str, Any]


@contextlib.asynccontextmanager
async def in_process(app: ASGIApp, *, run_lifespan: bool = True) -> AsyncIterator[InProcess]:
    """An httpx client on ``app`` in this process, its lifespan started before and stopped after."""
    lifespan = Lifespan(app)
    if run_lifespan:
        await lifespan.startup()
    try:
        transport = httpx.ASGITransport(app=lifespan.app(), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield InProcess(client, lifespan.state)
    finally:
        if run_lifespan:
            await lifespan.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """``alchemy-hex serve`` in a process of its own, on a loopback port."""

    process: subprocess.Popen[str]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)


def wait_ready(
    base_url: str, *, timeout_s: float = 60.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Poll ``/readyz`` until it answers 200 (the process must not exit meanwhile)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/readyz").status_code == 200:
                    return
            time.sleep(0.05)
    raise AssertionError(f"{base_url} was not ready within {timeout_s}s")


@contextlib.contextmanager
def serve_process(
    database_url: str, tmp_path: Path, *, env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[ServerProcess]:
    """``alchemy-hex serve`` on ``database_url``, once ready; killed on exit if still running."""
    port = port or free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEX_"))}
    variables = {**base, "DATABASE_URL": database_url, "HEX_ENVIRONMENT": "test", **(env or {})}
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [CLI, "serve", "--host", LOOPBACK, "--port", str(port)],
            env=variables,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = ServerProcess(process, port, log_path)
    try:
        wait_ready(server.base_url, process=process)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
