"""The secrets a credential provider handed out lately, kept so that logs can mask them."""

from __future__ import annotations

from collections import deque
from typing import Final

#: Enough to cover a rotation in progress (old and new) with room to spare; memory stays bounded
#: however long the service runs and however often a token is refreshed.
KEEP: Final = 8


class ServedSecrets:
    """The last few distinct secrets served, newest last. Not thread-safe; one event loop."""

    def __init__(self, *, keep: int = KEEP) -> None:
        self._values: deque[str] = deque(maxlen=keep)

    def add(self, secret: str) -> str:
        """Remember ``secret`` (moving it to the newest place) and return it."""
        if secret in self._values:
            self._values.remove(secret)
        self._values.append(secret)
        return secret

    def snapshot(self) -> tuple[str, ...]:
        return tuple(self._values)
