"""The ``CredentialProvider`` port: the password to present when a new connection is opened."""

from __future__ import annotations

from typing import Protocol


class CredentialProvider(Protocol):
    """Where a database role's password comes from, asked once for every new connection.

    ``password()`` returns the secret to present now. An adapter may read a mounted file, run a
    command that prints a short-lived token, or hold a fixed value, so two calls may answer
    differently: a rotated secret reaches the next new connection without a restart, while open
    connections keep working (PostgreSQL checks a password only at login). It raises
    :class:`ports.errors.CredentialError` when no secret can be had; the message names the source
    (a path, a program) and never a secret. Safe to share between tasks of one event loop.
    """

    async def password(self) -> str:
        """The secret for the next login, or ``CredentialError``."""
        ...

    def served(self) -> tuple[str, ...]:
        """The secrets handed out lately (at most a few, newest last), so logs can mask them."""
        ...
