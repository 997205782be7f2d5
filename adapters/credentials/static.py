"""``StaticCredentialProvider``: a password fixed at start-up."""

from __future__ import annotations

from ports.credential_provider import CredentialProvider
from ports.errors import ConfigurationError


class StaticCredentialProvider(CredentialProvider):
    """The same password for every connection (``HEX_CREDENTIALS__PASSWORD``).

    Rotating it takes a restart; use the file or command provider to rotate without one.
    """

    def __init__(self, *, password: str) -> None:
        if not password:
            raise ConfigurationError("credentials.password: must not be empty for the static source")
        self._password = password

    def __repr__(self) -> str:
        return "StaticCredentialProvider(password='***')"

    async def password(self) -> str:
        return self._password

    def served(self) -> tuple[str, ...]:
        return (self._password,)
