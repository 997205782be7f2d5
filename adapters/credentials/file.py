"""``FileCredentialProvider``: a password read from a file whenever a connection is opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from adapters.credentials.served import ServedSecrets
from ports.credential_provider import CredentialProvider
from ports.errors import CredentialError

log = structlog.get_logger(__name__)


class FileCredentialProvider(CredentialProvider):
    """The password in a file (a mounted Kubernetes or Vault secret), read for every new connection.

    Reading per connection is what lets a rotated secret reach the next login without a restart;
    it costs one small read next to a network round trip and a SCRAM exchange. The file holds the
    password alone: one trailing line break (as ``echo`` and most secret mounts leave it) is
    dropped, nothing else is. Whoever rotates the file should replace it atomically (write a new
    file, then rename it over the old one), as Kubernetes does, so that no reader sees half a
    password.
    """

    def __init__(self, *, path: Path) -> None:
        self._path = path
        self._served = ServedSecrets()

    def __repr__(self) -> str:
        return f"FileCredentialProvider(path={str(self._path)!r})"

    async def password(self) -> str:
        try:
            # A worker thread, because even a small read may block on a slow or network file system.
            raw = await asyncio.to_thread(self._path.read_bytes)
        except OSError as exc:
            raise CredentialError(
                f"password file {str(self._path)!r} cannot be read: {exc.strerror}"
            ) from None
        text = _utf8(raw)
        if text is None:
            # Raised outside the ``except``: the decode error carries the file's bytes, and even
            # ``from None`` would keep it as the ``__context__`` of ours.
            raise CredentialError(f"password file {str(self._path)!r} is not UTF-8 text")
        secret = text.removesuffix("\n").removesuffix("\r")
        if not secret:
            raise CredentialError(f"password file {str(self._path)!r} is empty")
        served = self._served.snapshot()
        if served and served[-1] != secret:
            # Worth a line: a login failing right after it points at the server's side of the rotation.
            log.info("credentials.rotated", source="file", path=str(self._path))
        return self._served.add(secret)

    def served(self) -> tuple[str, ...]:
        return self._served.snapshot()


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
