"""No contract error carries a secret anywhere in its chain, and no URL shows a query-string password.

A traceback prints only what ``raise ... from None`` leaves visible, but ``from None`` keeps the
handled exception in ``__context__``, and error trackers (and any code walking the chain) read it.
So these tests walk everything reachable from an error: ``__cause__``, ``__context__``, ``args``,
``__notes__``, attributes, exception-group members and pydantic's error details, ``str()`` and
``repr()`` of each, and look for any eight characters in a row of the secret.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from adapters.asyncio.shielding import BackgroundFinisher
from adapters.credentials.command import CommandCredentialProvider
from adapters.credentials.file import FileCredentialProvider
from adapters.sqlalchemy.connect_args import TlsOptions, client_context
from adapters.sqlalchemy.targets import EngineOptions, asyncpg_url, make_engine
from ports.errors import ConfigurationError, CredentialError
from settings import load_settings, mask_dsn
from tests.tls_support import make_pki

SECRET = "Quokka-Vellum-6642"
_WINDOW = 8


def _reachable(error: BaseException) -> Iterator[object]:
    """``error`` and every object reachable from it through its chain, each once."""
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            pending += [item.__cause__, item.__context__, *item.args, *getattr(item, "__notes__", ())]
            pending += getattr(item, "__dict__", {}).values()  # e.g. JSONDecodeError.doc
            if isinstance(item, BaseExceptionGroup):
                pending += item.exceptions
            if isinstance(item, ValidationError):
                pending += [detail.get("ctx") for detail in item.errors()]
        elif isinstance(item, Mapping):
            pending += item.values()
        elif isinstance(item, tuple | list | set | frozenset):
            pending += item


def assert_no_secret(error: BaseException, secret: str = SECRET) -> None:
    # Any case: urllib lower-cases what it takes for a scheme.
    fragments = {secret[i : i + _WINDOW].lower() for i in range(len(secret) - _WINDOW + 1)}
    for item in _reachable(error):
        for text in (str(item), repr(item)):
            leaked = [fragment for fragment in fragments if fragment in text.lower()]
            assert not leaked, f"{type(item).__name__} in the chain of {error!r} shows {leaked}: {text!r}"


def test_the_walk_finds_a_secret_hidden_by_from_none() -> None:
    # The helper itself must be able to fail, or every test below would pass vacuously.
    def hidden() -> None:
        try:
            raise ValueError(f"bad input {SECRET[:9]}...")
        except ValueError:
            raise ConfigurationError("database.url: invalid") from None

    with pytest.raises(ConfigurationError) as caught:
        hidden()
    with pytest.raises(AssertionError):
        assert_no_secret(caught.value)
    noted = ConfigurationError("clean")
    noted.add_note(f"note {SECRET}")
    with pytest.raises(AssertionError):
        assert_no_secret(ExceptionGroup("group", [noted]))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_REPLICA_URLS", "HEX_ENVIRONMENT", "HEX_DATABASE__URL"):
        monkeypatch.delenv(name, raising=False)


def _url(dsn: str) -> dict[str, object]:
    return {"database": {"url": dsn}}


# (keyword arguments to load_settings, environment variables, the field the message must name)
BAD_SETTINGS: dict[str, tuple[dict[str, object], dict[str, str], str]] = {
    "bad scheme": (_url(f"mysql://app:{SECRET}@db/ledger"), {}, "database.url"),
    "no scheme": (_url(f"app:{SECRET}@db/ledger"), {}, "database.url"),
    "a password where the scheme goes": (_url(f"{SECRET}:x@db/ledger"), {}, "database.url"),
    "libpq keyword form": (_url(f"host=db user=app password={SECRET}"), {}, "database.url"),
    "bad port": (_url(f"postgresql://app:{SECRET}@db:notaport/ledger"), {}, "database.url"),
    "port out of range": (_url(f"postgresql://app:{SECRET}@db:99999999/ledger"), {}, "database.url"),
    "no host": (_url(f"postgresql://app:{SECRET}@/ledger"), {}, "database.url"),
    "unbracketed IPv6 host": (_url(f"postgresql://app:{SECRET}@::1:5432/ledger"), {}, "database.url"),
    "unclosed IPv6 bracket": (_url(f"postgresql://app:{SECRET}@[::1/ledger"), {}, "database.url"),
    "unencoded / in the password": (_url(f"postgresql://app:{SECRET}/{SECRET}@db/x"), {}, "database.url"),
    "unencoded # in the password": (_url(f"postgresql://app:{SECRET}#{SECRET}@db/x"), {}, "database.url"),
    "unencoded ? in the password": (_url(f"postgresql://app:{SECRET}?{SECRET}@db/x"), {}, "database.url"),
    # A password starting with digits reads as a port, and the rest moves into the path or query.
    "unencoded / after digits": (_url(f"postgresql://app:2024/{SECRET}@db/x"), {}, "database.url"),
    "unencoded # after digits": (_url(f"postgresql://app:2024#{SECRET}@db/x"), {}, "database.url"),
    "unencoded ? after digits": (_url(f"postgresql://app:2024?{SECRET}@db/x"), {}, "database.url"),
    "query password, bad scheme": (_url(f"mysql://app@db/x?password={SECRET}"), {}, "database.url"),
    "query password, bad port": (_url(f"postgresql://app@db:x/ledger?password={SECRET}"), {}, "database.url"),
    "query password, no host": (_url(f"postgresql://app@/ledger?password={SECRET}"), {}, "database.url"),
    "query sslpassword, bad port": (
        _url(f"postgresql://app@db:x/ledger?sslpassword={SECRET}"),
        {},
        "database.url",
    ),
    "bad DATABASE_URL": ({}, {"DATABASE_URL": f"postgresql://app:{SECRET}@db:5432x/ledger"}, "database.url"),
    "bad HEX_DATABASE__URL": ({}, {"HEX_DATABASE__URL": f"pg://app:{SECRET}@db/ledger"}, "database.url"),
    "bad replica URL": (
        {"database": {"replica_urls": [f"http://app:{SECRET}@replica/ledger"]}},
        {},
        "database.replica_urls.0",
    ),
    "bad replica in DATABASE_REPLICA_URLS": (
        {},
        {"DATABASE_REPLICA_URLS": f"postgresql://app@r1/ledger, postgresql://app:{SECRET}@r2:bad/ledger"},
        "database.replica_urls.1",
    ),
    "plain DSN in HEX_DATABASE__REPLICA_URLS (JSON expected)": (
        {},
        {"HEX_DATABASE__REPLICA_URLS": f"postgresql://app:{SECRET}@replica/ledger"},
        "database",
    ),
    "DSN in HEX_DATABASE (JSON expected)": (
        {},
        {"HEX_DATABASE": f"postgresql://app:{SECRET}@db/x"},
        "database",
    ),
    "bad HEX_MIGRATION__URL port": (
        {},
        {"HEX_MIGRATION__URL": f"postgresql://owner:{SECRET}@db:port/ledger"},
        "migration.url",
    ),
    "bad HEX_MIGRATION__URL scheme": (
        {},
        {"HEX_MIGRATION__URL": f"postgresql+psycopg://owner:{SECRET}@db/ledger"},
        "migration.url",
    ),
    "unknown HEX_DATABASE__PASSWORD": ({}, {"HEX_DATABASE__PASSWORD": SECRET}, "database.password"),
    "unknown HEX_CREDENTIALS__TOKEN": ({}, {"HEX_CREDENTIALS__TOKEN": SECRET}, "credentials.token"),
    "unknown HEX_MIGRATION__PASSWORD": ({}, {"HEX_MIGRATION__PASSWORD": SECRET}, "migration.password"),
    "broken JSON in HEX_CREDENTIALS": (
        {},
        {"HEX_CREDENTIALS": f'{{"password": "{SECRET}",}}'},
        "credentials",
    ),
    "TLS key passphrase with a mode too weak": (
        {"tls": {"mode": "prefer", "cert_file": "/c.pem", "key_file": "/k.pem", "key_password": SECRET}},
        {},
        "tls",
    ),
    "replica TLS key passphrase without a certificate": (
        {},
        {
            "HEX_REPLICA_TLS__MODE": "require",
            "HEX_REPLICA_TLS__KEY_FILE": "/k.pem",
            "HEX_REPLICA_TLS__KEY_PASSWORD": SECRET,
        },
        "replica_tls",
    ),
    "static password beside an unbalanced command": (
        {"credentials": {"source": "static", "password": SECRET, "command": "get-token 'open"}},
        {},
        "credentials",
    ),
    "replica static password with a missing source": (
        {},
        {"HEX_REPLICA_CREDENTIALS__SOURCE": "file", "HEX_REPLICA_CREDENTIALS__PASSWORD": SECRET},
        "replica_credentials",
    ),
    "several bad fields at once": (
        {
            "database": {"url": f"postgresql://app:{SECRET}@db:x/ledger", "pool_size": 0},
            "migration": {"url": f"mysql://owner:{SECRET}@db/ledger"},
        },
        {"HEX_TLS__KEY_PASSWORD": SECRET, "HEX_TLS__MODE": "verify"},
        "migration.url",
    ),
}


@pytest.mark.parametrize(("overrides", "env", "field"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_rejected_setting_names_its_field_and_no_secret_is_anywhere_in_the_chain(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object], env: dict[str, str], field: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError) as caught:
        load_settings(**overrides)

    assert field in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert_no_secret(caught.value)


@pytest.fixture
def engine_options() -> EngineOptions:
    return EngineOptions(
        pool_size=1,
        max_overflow=0,
        connect_timeout_s=1.0,
        server_settings={},
        max_lifetime_s=60.0,
        lifetime_jitter=0.0,
        pre_ping=False,
        pgbouncer=False,
    )


QUERY_PASSWORDS = {
    "query only": f"postgresql://app@db/ledger?password={SECRET}",
    "with other parameters": f"postgresql://app@db:5433/ledger?sslmode=require&password={SECRET}&x=1",
    "percent-encoded": f"postgresql://app@db/ledger?password={SECRET[:6]}%2D{SECRET[7:]}",
    "beside a user-info password": f"postgresql://app:other-one@db/ledger?password={SECRET}",
    "several hosts": f"postgresql://app@db1:5432,db2/ledger?password={SECRET}",
    "several hosts, no user": f"postgresql://db1,db2:5433/ledger?password={SECRET}",
    "in user-info, several hosts": f"postgresql://app:{SECRET}@db1,db2:5433/ledger",
}


@pytest.mark.parametrize("dsn", QUERY_PASSWORDS.values(), ids=QUERY_PASSWORDS.keys())
def test_a_query_string_password_is_masked_in_the_url_and_the_engine_and_still_reaches_the_driver(
    dsn: str, engine_options: EngineOptions
) -> None:
    settings = load_settings(database={"url": dsn})
    assert SECRET in settings.secret_values()
    url = asyncpg_url(dsn)
    engine = make_engine(dsn, engine_options, {}, role="writer", connects=BackgroundFinisher())
    shown = [str(url), repr(url), url.render_as_string(), repr(engine), str(engine.url), mask_dsn(dsn)]

    assert not any(SECRET[:_WINDOW] in text or SECRET[-_WINDOW:] in text for text in shown), shown
    # libpq lets a query parameter win over the user-info part; so does asyncpg's dialect.
    dialect: Any = PGDialect_asyncpg  # SQLAlchemy's dialects are untyped
    _, params = dialect().create_connect_args(url)
    assert params["password"] == SECRET
    assert "password" not in url.query


UNENCODED_BUT_UNAMBIGUOUS = {"@": f"{SECRET}@{SECRET}", "%": f"{SECRET}%{SECRET}", "%40": f"{SECRET}%40x"}


@pytest.mark.parametrize("password", UNENCODED_BUT_UNAMBIGUOUS.values(), ids=UNENCODED_BUT_UNAMBIGUOUS.keys())
def test_a_password_with_an_at_sign_or_a_percent_is_taken_whole_and_shown_nowhere(
    password: str, engine_options: EngineOptions
) -> None:
    # The settings split user-info from the host at the last "@", so the engine must do the same;
    # splitting at the first would connect to "<rest of the password>@db" and print it as the host.
    dsn = f"postgresql://app:{password}@db:5432/ledger"
    settings = load_settings(database={"url": dsn})
    engine = make_engine(dsn, engine_options, {}, role="writer", connects=BackgroundFinisher())

    assert engine.url.host == "db"
    assert engine.url.password in settings.secret_values()
    assert SECRET not in repr(engine) + str(engine.url)


async def test_a_password_file_that_is_not_utf8_leaves_its_bytes_nowhere_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(SECRET.encode() + b"\xff\xfe")
    provider = FileCredentialProvider(path=path)

    with pytest.raises(CredentialError, match="is not UTF-8") as caught:
        await provider.password()

    assert_no_secret(caught.value)


async def test_a_token_that_is_not_utf8_leaves_its_bytes_nowhere_in_the_error() -> None:
    script = f"import sys; sys.stdout.buffer.write({SECRET.encode()!r} + bytes([255]))"
    provider = CommandCredentialProvider(argv=[sys.executable, "-c", script])

    with pytest.raises(CredentialError, match="printed no UTF-8 text") as caught:
        await provider.password()

    assert_no_secret(caught.value)


@pytest.mark.parametrize("key_password", [None, SECRET], ids=["no passphrase", "wrong passphrase"])
def test_a_client_key_that_does_not_decrypt_leaves_the_passphrase_nowhere_in_the_error(
    tmp_path: Path, key_password: str | None
) -> None:
    pki = make_pki(tmp_path, client_role="app", key_password=SECRET[::-1])
    options = TlsOptions(
        mode="require",
        cert_file=pki.client_cert_file,
        key_file=pki.client_key_file,
        key_password=key_password,
    )

    with pytest.raises(ConfigurationError, match=r"tls\.key_password") as caught:
        client_context(options)

    assert caught.value.__context__ is None
    assert_no_secret(caught.value)
    assert_no_secret(caught.value, SECRET[::-1])


def test_a_missing_ca_file_error_does_not_chain_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"tls\.ca_file") as caught:
        client_context(TlsOptions(mode="verify-full", ca_file=tmp_path / "missing.crt"))
    assert caught.value.__context__ is None
