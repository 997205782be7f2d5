"""The ``CredentialProvider`` contract, run against every adapter of the port."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.credentials.command import CommandCredentialProvider
from adapters.credentials.file import FileCredentialProvider
from adapters.credentials.static import StaticCredentialProvider
from ports.credential_provider import CredentialProvider
from ports.errors import CredentialError

SECRET = "Contract-Secret-0042"

ProviderFactory = Callable[[Path], CredentialProvider]


def _file(directory: Path) -> CredentialProvider:
    path = directory / "password"
    path.write_text(SECRET + "\n")
    return FileCredentialProvider(path=path)


def _command(directory: Path) -> CredentialProvider:
    return CommandCredentialProvider(argv=[sys.executable, "-c", f"print({SECRET!r})"], token_ttl_s=60)


ADAPTERS: dict[str, ProviderFactory] = {
    "static": lambda _directory: StaticCredentialProvider(password=SECRET),
    "file": _file,
    "command": _command,
}
BROKEN: dict[str, ProviderFactory] = {
    "file": lambda directory: FileCredentialProvider(path=directory / "missing"),
    "command": lambda _directory: CommandCredentialProvider(
        argv=[sys.executable, "-c", "raise SystemExit(3)"]
    ),
}

each_provider = pytest.mark.parametrize("make", ADAPTERS.values(), ids=ADAPTERS.keys())
each_broken_provider = pytest.mark.parametrize("make", BROKEN.values(), ids=BROKEN.keys())


@each_provider
async def test_the_password_is_the_configured_secret(make: ProviderFactory, tmp_path: Path) -> None:
    assert await make(tmp_path).password() == SECRET


@each_provider
async def test_every_secret_handed_out_is_reported_for_masking(make: ProviderFactory, tmp_path: Path) -> None:
    provider = make(tmp_path)

    await provider.password()

    assert provider.served()[-1] == SECRET


@each_provider
async def test_concurrent_callers_all_get_the_secret(make: ProviderFactory, tmp_path: Path) -> None:
    provider = make(tmp_path)

    answers = await asyncio.gather(*(provider.password() for _ in range(10)))

    assert set(answers) == {SECRET}


@each_provider
def test_the_repr_never_shows_the_secret(make: ProviderFactory, tmp_path: Path) -> None:
    assert SECRET not in repr(make(tmp_path))


@each_broken_provider
async def test_a_source_that_cannot_answer_raises_a_retryable_credential_error(
    make: ProviderFactory, tmp_path: Path
) -> None:
    with pytest.raises(CredentialError) as caught:
        await make(tmp_path).password()
    assert caught.value.retryable
