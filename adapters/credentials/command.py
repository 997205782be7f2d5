"""``CommandCredentialProvider``: a short-lived token printed by a command, cached for a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import PurePath

from adapters.credentials.served import ServedSecrets
from ports.credential_provider import CredentialProvider
from ports.errors import ConfigurationError, CredentialError


class CommandCredentialProvider(CredentialProvider):
    """A token printed by a command, such as ``aws rds generate-db-auth-token``, reused for ``token_ttl_s``.

    The command runs without a shell, with the service's environment, one run at a time however
    many connections open at once. Its standard output, stripped of surrounding white space, is the
    token; its standard error is discarded. A command that cannot start, fails, prints nothing or
    outlives ``timeout_s`` raises ``CredentialError`` naming the program and what happened, never
    what it printed. ``token_ttl_s`` must stay below the token's real lifetime; ``0`` runs the
    command for every new connection. The connect timeout bounds a run too, since the token is
    asked for inside the login.
    """

    def __init__(
        self,
        *,
        argv: Sequence[str],
        timeout_s: float = 5.0,
        token_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not argv or not argv[0]:
            raise ConfigurationError("credentials.command: must name a program to run")
        self._argv = tuple(argv)
        self._program = PurePath(argv[0]).name
        self._timeout_s = timeout_s
        self._token_ttl_s = token_ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._served = ServedSecrets()

    def __repr__(self) -> str:
        return f"CommandCredentialProvider(program={self._program!r}, token_ttl_s={self._token_ttl_s})"

    async def password(self) -> str:
        # One run at a time: a pool opening ten connections at once needs one token, not ten.
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            token = await self._run()
            self._token, self._expires_at = token, self._clock() + self._token_ttl_s
            return self._served.add(token)

    async def _run(self) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            raise CredentialError(
                f"credential command {self._program!r} cannot start: {exc.strerror}"
            ) from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self._timeout_s)
        except TimeoutError:
            raise CredentialError(
                f"credential command {self._program!r} did not finish within {self._timeout_s:g}s"
            ) from None
        finally:
            # Also on cancellation (a connect timeout): never leave the command running behind us.
            if process.returncode is None:
                process.kill()
                await process.wait()
        return self._token_from(process.returncode, output)

    def _token_from(self, status: int | None, output: bytes) -> str:
        if status != 0:
            raise CredentialError(f"credential command {self._program!r} exited with status {status}")
        token = _utf8(output)
        if token is None:
            # Raised outside an ``except``: the decode error carries the output, and even
            # ``from None`` would keep it as the ``__context__`` of ours.
            raise CredentialError(f"credential command {self._program!r} printed no UTF-8 text")
        token = token.strip()
        if not token:
            raise CredentialError(f"credential command {self._program!r} printed no token")
        return token

    def served(self) -> tuple[str, ...]:
        return self._served.snapshot()


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
