"""A password wherever a DSN may carry one (user-info, encoded or with a bare "@"; the query string;
beside several hosts) logs in for real, on a server that checks passwords."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import text

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import build_connection_provider
from ports.connection_provider import Intent
from settings import load_settings

ADMIN_PASSWORD = "Admin-Dsn-Forms-4402"
ENCODED_ROLE, ENCODED_PASSWORD = "app_encoded", "Ibis/Quartz?#@5190%:"
AT_ROLE, AT_PASSWORD = "app_at", "Ibis@Quartz-5190"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresCluster]:
    with PostgresCluster(binaries=find_binaries(), password=ADMIN_PASSWORD) as cluster:
        cluster.query(f"CREATE ROLE {ENCODED_ROLE} LOGIN PASSWORD '{ENCODED_PASSWORD}'")
        cluster.query(f"CREATE ROLE {AT_ROLE} LOGIN PASSWORD '{AT_PASSWORD}'")
        yield cluster


def _where(server: PostgresCluster) -> str:
    return f"127.0.0.1:{server.port}/postgres"


FORMS: dict[str, tuple[str, Callable[[PostgresCluster], str]]] = {
    "percent-encoded user-info": (
        ENCODED_ROLE,
        lambda s: f"postgresql://{ENCODED_ROLE}:{quote(ENCODED_PASSWORD, safe='')}@{_where(s)}",
    ),
    "a bare @ in the user-info": (AT_ROLE, lambda s: f"postgresql://{AT_ROLE}:{AT_PASSWORD}@{_where(s)}"),
    "the query string": (
        ENCODED_ROLE,
        lambda s: f"postgresql://{ENCODED_ROLE}@{_where(s)}?password={quote(ENCODED_PASSWORD, safe='')}",
    ),
    "the query string, winning over the user-info": (
        AT_ROLE,
        lambda s: f"postgresql://{AT_ROLE}:wrong@{_where(s)}?password={quote(AT_PASSWORD, safe='')}",
    ),
    "the query string beside several hosts": (
        AT_ROLE,
        lambda s: (
            f"postgresql://{AT_ROLE}@127.0.0.1:1,127.0.0.1:{s.port}/postgres"
            f"?password={quote(AT_PASSWORD, safe='')}"
        ),
    ),
}


@pytest.mark.parametrize(("role", "dsn_of"), FORMS.values(), ids=FORMS.keys())
async def test_the_password_logs_in_wherever_the_dsn_carries_it(
    server: PostgresCluster, role: str, dsn_of: Callable[[PostgresCluster], str]
) -> None:
    settings = load_settings(environment="test", database={"url": dsn_of(server)})
    provider = build_connection_provider(settings.database)
    try:
        async with provider.connection(Intent.WRITE) as connection:
            assert await connection.scalar(text("SELECT current_user")) == role
    finally:
        await provider.aclose()
