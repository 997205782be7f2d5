"""The container turns security settings into connect arguments per target and a migration provider."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.credentials.file import FileCredentialProvider
from adapters.credentials.static import StaticCredentialProvider
from adapters.structlog.logging import SecretScrubber
from container import Container, create_container, watch_served_secrets
from settings import load_settings

URL = "postgresql://app:pw@127.0.0.1:1/ledger"  # never connected to


@pytest.fixture
async def built(request: pytest.FixtureRequest) -> AsyncIterator[Container]:
    container = create_container(load_settings(environment="test", **request.param))
    yield container
    await container.connection_provider().aclose()


def _settings(**groups: object) -> dict[str, object]:
    return {"database": {"url": URL, "replica_urls": [URL, URL]}, **groups}


@pytest.mark.parametrize("built", [_settings(tls={"mode": "require"})], indirect=True)
async def test_replicas_use_the_writers_tls_and_credentials_unless_told_otherwise(built: Container) -> None:
    args = built.target_connect_args()

    assert set(args) == {"writer", "replica-1", "replica-2"}
    assert all(isinstance(target["ssl"], ssl.SSLContext) for target in args.values())
    assert all("password" not in target for target in args.values())
    assert built.writer_credentials() is None


@pytest.mark.parametrize(
    "built",
    [
        _settings(
            tls={"mode": "require"},
            replica_tls={"mode": "disable"},
            credentials={"source": "file", "password_file": "/run/secrets/db"},
            replica_credentials={"source": "static", "password": "reader-secret"},
        )
    ],
    indirect=True,
)
async def test_replica_groups_override_tls_and_credentials_for_every_replica(built: Container) -> None:
    args = built.target_connect_args()

    assert isinstance(built.writer_credentials(), FileCredentialProvider)
    assert isinstance(built.replica_credentials(), StaticCredentialProvider)
    assert args["replica-1"]["ssl"] == args["replica-2"]["ssl"] == "disable"
    assert await args["replica-2"]["password"]() == "reader-secret"
    assert isinstance(args["writer"]["ssl"], ssl.SSLContext)


@pytest.mark.parametrize(
    "built", [_settings(credentials={"source": "command", "command": "print-token --fresh"})], indirect=True
)
async def test_replicas_share_the_writers_provider_so_one_token_cache_serves_all(built: Container) -> None:
    assert built.replica_credentials() is built.writer_credentials()


@pytest.mark.parametrize(
    "built",
    [
        _settings(
            migration={"url": "postgresql://owner:owner-pw@127.0.0.1:1/ledger"},
            credentials={"source": "static", "password": "svc"},
        )
    ],
    indirect=True,
)
async def test_migrations_log_in_as_the_schema_owner_with_its_own_password(built: Container) -> None:
    provider = built.migration_provider()
    try:
        engine = provider.engine()
        assert engine.url.username == "owner"
        assert engine.url.password == "owner-pw"
    finally:
        await provider.aclose()


@pytest.mark.parametrize("built", [_settings()], indirect=True)
async def test_without_a_migration_url_migrations_use_the_service_role(built: Container) -> None:
    provider = built.migration_provider()
    try:
        assert provider.engine().url.username == "app"
    finally:
        await provider.aclose()


async def test_a_password_read_from_a_file_is_scrubbed_once_it_has_been_served(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("Rotated-File-Secret-1")
    container = create_container(
        load_settings(database={"url": URL}, credentials={"source": "file", "password_file": str(path)})
    )
    scrubber = SecretScrubber()
    watch_served_secrets(container, scrubber)
    provider = container.writer_credentials()
    assert provider is not None

    await provider.password()

    assert scrubber.scrub("echo Rotated-File-Secret-1") == "echo ***"
