"""The file and command credential providers against the real file system and processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import structlog.testing

from adapters.credentials.command import CommandCredentialProvider
from adapters.credentials.file import FileCredentialProvider
from adapters.credentials.served import ServedSecrets
from adapters.credentials.static import StaticCredentialProvider
from ports.errors import ConfigurationError, CredentialError

TOKEN = "Token-From-The-Command-77"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_the_file_is_read_again_for_each_connection_so_a_rotation_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("first\n")
    provider = FileCredentialProvider(path=path)
    assert await provider.password() == "first"

    path.write_text("second")

    assert await provider.password() == "second"
    assert provider.served() == ("first", "second")


async def test_only_one_trailing_line_break_is_dropped_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(b" spaced out \t\r\n")

    assert await FileCredentialProvider(path=path).password() == " spaced out \t"


@pytest.mark.parametrize(
    ("content", "problem"), [(b"\n", "is empty"), (b"\xff\xfe secret", "is not UTF-8 text")]
)
async def test_an_unusable_file_is_refused_naming_the_path_only(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "password"
    path.write_bytes(content)
    with pytest.raises(CredentialError, match=problem) as caught:
        await FileCredentialProvider(path=path).password()
    assert str(path) in str(caught.value)
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_a_missing_file_says_why(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="No such file"):
        await FileCredentialProvider(path=tmp_path / "absent").password()


async def test_a_token_is_reused_until_its_ttl_runs_out(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # Prints how many times it has run so far: 1, 2, ...
    code = f"f = open({str(runs)!r}, 'a+'); f.write('x'); f.seek(0); print(len(f.read()))"
    now = [0.0]
    provider = CommandCredentialProvider(argv=_python(code), token_ttl_s=10, clock=lambda: now[0])

    first = await provider.password()
    again = await asyncio.gather(*(provider.password() for _ in range(5)))
    now[0] = 10.5
    refreshed = await provider.password()

    assert (first, set(again), refreshed) == ("1", {"1"}, "2")
    assert provider.served() == ("1", "2")


async def test_concurrent_connections_share_one_run_of_the_command(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code = (
        f"import pathlib, time; time.sleep(0.1); pathlib.Path({str(runs)!r}).open('a').write('x'); print('t')"
    )
    provider = CommandCredentialProvider(argv=_python(code), token_ttl_s=60)

    await asyncio.gather(*(provider.password() for _ in range(5)))

    assert runs.read_text() == "x"


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (f"import sys; print({TOKEN!r}); sys.exit(2)", "exited with status 2"),
        ("print('   ')", "printed no token"),
        (f"import sys, time; print({TOKEN!r}, flush=True); time.sleep(30)", "did not finish within 3s"),
    ],
    ids=["failure", "no token", "timeout"],
)
async def test_a_failing_command_is_named_without_its_output(code: str, problem: str) -> None:
    # Long enough for a Python to start on a loaded machine: the first two must end on their own.
    provider = CommandCredentialProvider(argv=_python(code), timeout_s=3.0)
    with pytest.raises(CredentialError, match=problem) as caught:
        await provider.password()
    assert TOKEN not in str(caught.value)
    assert "python" in str(caught.value)


async def test_a_command_that_cannot_start_says_so() -> None:
    with pytest.raises(CredentialError, match="cannot start"):
        await CommandCredentialProvider(argv=["/nonexistent/token-helper"]).password()


def test_empty_configurations_are_refused_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match=r"credentials\.command"):
        CommandCredentialProvider(argv=[])
    with pytest.raises(ConfigurationError, match=r"credentials\.password"):
        StaticCredentialProvider(password="")


def test_served_secrets_stay_few_and_newest_last() -> None:
    served = ServedSecrets(keep=3)
    for secret in ["a", "b", "c", "a", "d"]:
        served.add(secret)
    assert served.snapshot() == ("c", "a", "d")


async def test_a_rotation_of_the_file_is_logged_without_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("before-rotation")
    provider = FileCredentialProvider(path=path)
    await provider.password()
    path.write_text("after-rotation")

    with structlog.testing.capture_logs() as logs:
        await provider.password()
        await provider.password()

    assert logs == [
        {"event": "credentials.rotated", "source": "file", "path": str(path), "log_level": "info"}
    ]
