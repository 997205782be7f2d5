"""PostgreSQL DSNs as settings: validated without echoing them, masked for logs, their secrets listed."""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit

from pydantic import AfterValidator, SecretStr

_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})
#: Query parameters of a DSN that hold a secret (libpq's names: the password and the key's passphrase).
_QUERY_SECRETS: Final = frozenset({"password", "sslpassword"})


def _is_query_secret(pair: str) -> bool:
    return unquote_plus(pair.partition("=")[0]).lower() in _QUERY_SECRETS


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password (user-info or query string) replaced by ``***``; safe for logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    # Replaced where they are written (the first "//...@" and the first "?..."), the rest untouched.
    masked = dsn
    if parts.password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        masked = masked.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:***@{hostinfo}", 1)
    pairs = parts.query.split("&")
    if any(_is_query_secret(pair) for pair in pairs):
        query = "&".join(
            f"{pair.partition('=')[0]}=***" if _is_query_secret(pair) else pair for pair in pairs
        )
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def dsn_passwords(dsn: str) -> set[str]:
    """The secrets in ``dsn`` (user-info password, query ``password``), as written and decoded."""
    parts = urlsplit(dsn)
    written = [pair.partition("=")[2] for pair in parts.query.split("&") if _is_query_secret(pair)]
    decoded = [unquote_plus(value) for value in written]  # how a query string is decoded
    if parts.password:
        written.append(parts.password)
        decoded.append(unquote(parts.password))
    return {secret for secret in (*written, *decoded) if secret}


def _split_dsn(dsn: str) -> SplitResult | None:
    """``dsn`` split, or ``None`` if it cannot be (outside ``except``: urllib's errors quote the DSN)."""
    try:
        parts = urlsplit(dsn)
        if "," not in parts.netloc:  # libpq's multi-host form has no single port to parse
            parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError:
        return None
    return parts


def _host_part_ends_early(parts: SplitResult) -> bool:
    # A "/", "?" or "#" in a password ends the host part there (a password starting with digits
    # even reads as a port), and "...@host" turns up in the path, a parameter name or the fragment:
    # the rest of the password would be taken for a database name or a parameter, and shown.
    names = (pair.partition("=")[0] for pair in parts.query.split("&"))
    return bool(parts.fragment) or "@" in parts.path or any("@" in name for name in names)


def _check_dsn(value: SecretStr) -> SecretStr:
    parts = _split_dsn(value.get_secret_value())
    if parts is None:
        raise ValueError("is not a valid URL (postgresql://user:password@host:port/database)")
    if parts.scheme not in _SCHEMES:
        # Not quoted: whatever stands before the first ":" may be part of a password.
        raise ValueError("must use the postgresql:// scheme (or postgres://, postgresql+asyncpg://)")
    if _host_part_ends_early(parts):
        raise ValueError("has an '@' after its host; percent-encode '/', '?', '#' and '@' in a password")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("must name a host")
    return value


#: A PostgreSQL DSN kept secret: it may carry the password.
PostgresDsn = Annotated[SecretStr, AfterValidator(_check_dsn)]
