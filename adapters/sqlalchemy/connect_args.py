"""asyncpg's connect arguments for TLS and for a password that may change between connections.

TLS modes mean what they mean for libpq, with one deliberate difference: ``require`` never
verifies, even when a CA file is around (libpq's historical quirk); ask for ``verify-ca`` or
``verify-full`` instead. ``disable`` and ``prefer`` are handed to asyncpg as they are, since only
asyncpg can fall back to plain text for ``prefer`` (an ``SSLContext`` always means "TLS or fail").
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from ports.credential_provider import CredentialProvider
from ports.errors import ConfigurationError

TlsMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
#: Modes that use a TLS context of ours; the others are asyncpg's own strings.
CONTEXT_MODES: Final = frozenset({"require", "verify-ca", "verify-full"})


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """One target group's TLS: how much of the server to check, and the client's own certificate."""

    mode: TlsMode = "prefer"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = field(default=None, repr=False)


def connect_args(
    tls: TlsOptions, *, credentials: CredentialProvider | None = None, setting: str = "tls"
) -> dict[str, Any]:
    """Extra keyword arguments for ``asyncpg.connect``: TLS, and the password source if there is one.

    Without ``credentials`` the DSN's own password (or ``PGPASSWORD``, ``~/.pgpass``) is used.
    Raises ``ConfigurationError`` as :func:`tls_connect_args` does.
    """
    args = tls_connect_args(tls, setting=setting)
    if credentials is not None:
        # asyncpg calls (and awaits) it for every new connection, so a rotated secret reaches the
        # next login; connections already open are unaffected.
        args["password"] = credentials.password
    return args


def tls_connect_args(options: TlsOptions, *, setting: str = "tls") -> dict[str, Any]:
    """The keyword arguments for ``asyncpg.connect`` that give ``options``; files are read now.

    Raises ``ConfigurationError`` naming the setting (``setting``, e.g. ``replica_tls``) and the
    file when a CA, certificate or key cannot be loaded, so that a bad path or key password stops
    the service at start-up rather than at its first connection.
    """
    if options.mode not in CONTEXT_MODES:
        return {"ssl": options.mode}
    return {"ssl": client_context(options, setting=setting)}


class _OneWayClose(ssl.SSLObject):
    """Ends TLS as libpq does: sends close_notify and closes, without waiting for the server's reply.

    asyncpg closes a connection whose login the server refused with the transport's graceful
    ``close()`` and raises at once; asyncio would then keep the socket open until the server's own
    close_notify arrives (up to 30s), so a server slow to send it, or an event loop that ends first,
    left the socket to the garbage collector. TLS 1.3 (RFC 8446, 6.1) lets the side that closes
    stop there; nothing is read from a connection being closed anyway.
    """

    def unwrap(self) -> None:
        # Raised once our close_notify is written and the server's has not arrived: done, for us.
        with contextlib.suppress(ssl.SSLWantReadError):
            super().unwrap()


def client_context(options: TlsOptions, *, setting: str = "tls") -> ssl.SSLContext:
    """An ``SSLContext`` for ``require``, ``verify-ca`` or ``verify-full``; see :class:`_OneWayClose`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.sslobject_class = _OneWayClose
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.mode == "require":
        # Encryption against eavesdroppers only: anyone who can answer on the address is accepted.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = options.mode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
        _load_trust(context, options.ca_file, setting)
    if options.cert_file is not None:
        _load_client_certificate(context, options, setting)
    return context


def _load_trust(context: ssl.SSLContext, ca_file: Path | None, setting: str) -> None:
    if ca_file is None:
        # No CA file: the system's trust store, which knows the public CAs of managed databases.
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return
    try:
        context.load_verify_locations(cafile=ca_file)
    except OSError as exc:
        why = _why(exc)
    else:
        return
    # Raised outside the ``except`` (as below), so the library's error is not left in ``__context__``.
    raise ConfigurationError(f"{setting}.ca_file: {str(ca_file)!r} cannot be read: {why}")


def _load_client_certificate(context: ssl.SSLContext, options: TlsOptions, setting: str) -> None:
    key_password = options.key_password or ""
    try:
        # Always a password callback: without one OpenSSL would prompt on the terminal for an
        # encrypted key. An empty answer makes it fail instead.
        context.load_cert_chain(options.cert_file or "", options.key_file, password=lambda: key_password)
    except ssl.SSLError as exc:
        problem = (
            f"{setting}.cert_file: {str(options.cert_file)!r} cannot be loaded with its key ({_why(exc)}); "
            f"check {setting}.key_password and that {setting}.key_file belongs to the certificate"
        )
    except OSError as exc:
        problem = f"{setting}.cert_file or key_file: {str(options.cert_file)!r} cannot be read: {_why(exc)}"
    else:
        return
    raise ConfigurationError(problem)


def _why(error: OSError) -> str:
    # ssl.SSLError carries an OpenSSL reason such as BAD_DECRYPT; file errors a strerror.
    reason = getattr(error, "reason", None) or error.strerror
    return str(reason) if reason else type(error).__name__
