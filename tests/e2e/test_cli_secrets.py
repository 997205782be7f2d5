"""Secret hygiene end to end: distinctive secrets in every source, the CLI run to success and to failure,
and not one of them in anything it printed.

The server speaks only TLS; the service logs in with a client certificate whose key has a
passphrase, with a password from a file, or with a token from a command; migrations run as the
schema owner with a password in their DSN. tests/e2e/test_cli.py covers the plain-DSN cases. Rejected
settings carrying a secret, and a password in a DSN's query string, need no server.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.postgres.cluster import PostgresCluster
from tests.redis_support import RedisServer
from tests.support import run_cli
from tests.tls_support import Pki, make_pki, tls_cluster

OWNER_PASSWORD = "Walrus-Onyx-4417-owner"
KEY_PASSWORD = "Heron-Basalt-2290-passphrase"
FILE_PASSWORD = "Lynx-Garnet-8803-mounted"
TOKEN = "Otter-Jade-5561-token"
WRONG = "Viper-Slate-3318-wrong"
REDIS_PASSWORD = "Puffin-Quartz-6672-redis"
SECRETS = (OWNER_PASSWORD, KEY_PASSWORD, FILE_PASSWORD, TOKEN, WRONG, REDIS_PASSWORD)
CERT_ROLE = "cert_app"


@dataclass(frozen=True, slots=True)
class Setup:
    server: PostgresCluster
    pki: Pki
    password_file: Path
    tls: dict[str, str]

    def env(self, user: str, **extra: str) -> dict[str, str]:
        """A service logging in as ``user`` over verify-full, migrating as the owner, logging everything."""
        return {
            "DATABASE_URL": self.server.dsn("ledger", user=user),
            "HEX_MIGRATION__URL": self.server.dsn("ledger", password=OWNER_PASSWORD),
            "HEX_ENVIRONMENT": "test",
            "HEX_LOGGING__LEVEL": "debug",
            "HEX_LOGGING__FORMAT": "json",
            "HEX_DATABASE__CONNECT_TIMEOUT_S": "2",
            **self.tls,
            **extra,
        }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("secrets")
    pki = make_pki(directory, client_role=CERT_ROLE, key_password=KEY_PASSWORD)
    rules = [f"hostssl all {CERT_ROLE} 127.0.0.1/32 cert", "hostnossl all all 127.0.0.1/32 reject"]
    with tls_cluster(pki, password=OWNER_PASSWORD, hba_rules=rules) as server:
        for statement in (
            "CREATE ROLE hex_service NOLOGIN",
            f"CREATE ROLE {CERT_ROLE} LOGIN IN ROLE hex_service",
            f"CREATE ROLE file_app LOGIN PASSWORD '{FILE_PASSWORD}' IN ROLE hex_service",
            f"CREATE ROLE token_app LOGIN PASSWORD '{TOKEN}' IN ROLE hex_service",
            "CREATE DATABASE ledger",
        ):
            server.query(statement)
        password_file = directory / "password"
        password_file.write_text(FILE_PASSWORD + "\n")
        tls = {
            "HEX_TLS__MODE": "verify-full",
            "HEX_TLS__CA_FILE": str(pki.ca_file),
            "HEX_TLS__CERT_FILE": str(pki.client_cert_file),
            "HEX_TLS__KEY_FILE": str(pki.client_key_file),
            "HEX_TLS__KEY_PASSWORD": KEY_PASSWORD,
        }
        yield Setup(server, pki, password_file, tls)


def _assert_no_secret(done: subprocess.CompletedProcess[str]) -> None:
    # In any case: urllib lower-cases whatever it takes for a URL's scheme.
    captured = (done.stdout + done.stderr).lower()
    for secret in (s.lower() for s in SECRETS):
        assert secret not in captured, f"a secret leaked: {secret[:6]}..."
        assert secret[:12] not in captured


def test_migrate_and_the_demo_over_verify_full_with_a_client_certificate_print_no_secret(
    setup: Setup,
) -> None:
    env = setup.env(CERT_ROLE)

    migrated = run_cli("migrate", env=env)
    demo = run_cli("demo", "--json", "--seconds", "1", "--workers", "4", "--accounts", "4", env=env)

    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert '"passed": true' in demo.stdout
    _assert_no_secret(migrated)
    _assert_no_secret(demo)


@pytest.mark.parametrize(
    ("user", "source"),
    [
        ("file_app", {"HEX_CREDENTIALS__SOURCE": "file"}),
        ("token_app", {"HEX_CREDENTIALS__SOURCE": "command"}),
    ],
    ids=["password file", "token command"],
)
def test_a_password_from_a_file_or_a_token_command_logs_in_and_is_never_printed(
    setup: Setup, user: str, source: dict[str, str]
) -> None:
    env = setup.env(
        user,
        HEX_CREDENTIALS__PASSWORD_FILE=str(setup.password_file),
        HEX_CREDENTIALS__COMMAND=f"{sys.executable} -c 'print(\"{TOKEN}\")'",
        **source,
    )

    done = run_cli("open-account", "secret keeper", env=env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "account_id" in done.stdout
    _assert_no_secret(done)


def _wrong_password_file(setup: Setup) -> dict[str, str]:
    wrong = setup.password_file.with_name("wrong-password")
    wrong.write_text(WRONG)
    return {"HEX_CREDENTIALS__SOURCE": "file", "HEX_CREDENTIALS__PASSWORD_FILE": str(wrong)}


FAILURES = {
    "wrong password": ("file_app", _wrong_password_file, "password authentication failed"),
    "unreachable host": (
        CERT_ROLE,
        lambda s: {"DATABASE_URL": f"postgresql://{CERT_ROLE}:{WRONG}@127.0.0.1:1/ledger"},
        "database unavailable",
    ),
    "untrusted certificate": (
        CERT_ROLE,
        lambda s: {"HEX_TLS__CA_FILE": str(s.pki.wrong_ca_file)},
        "not trusted",
    ),
    "wrong key passphrase": (CERT_ROLE, lambda s: {"HEX_TLS__KEY_PASSWORD": WRONG}, "tls.key_password"),
    "failing token command": (
        "token_app",
        lambda s: {
            "HEX_CREDENTIALS__SOURCE": "command",
            "HEX_CREDENTIALS__COMMAND": f"{sys.executable} -c 'print(\"{TOKEN}\"); raise SystemExit(1)'",
        },
        "exited with status 1",
    ),
}


@pytest.mark.parametrize(("user", "overrides", "reason"), FAILURES.values(), ids=FAILURES.keys())
def test_a_failure_says_what_went_wrong_and_prints_no_secret(
    setup: Setup, user: str, overrides: object, reason: str
) -> None:
    assert callable(overrides)
    env = setup.env(user, **overrides(setup))
    # The migration is the service's own role here, so the failure is the service's.
    env.pop("HEX_MIGRATION__URL")

    done = run_cli("balance", "00000000-0000-0000-0000-000000000001", env=env, timeout_s=60)

    assert done.returncode != 0
    assert "alchemy-hex: error:" in done.stderr
    assert reason in done.stderr, done.stderr[-2000:]
    _assert_no_secret(done)


BAD_INPUT = {
    "bad scheme": {"DATABASE_URL": f"mysql://app:{WRONG}@127.0.0.1/ledger"},
    "a password where the scheme goes": {"DATABASE_URL": f"{WRONG}:x@127.0.0.1/ledger"},
    "bad port": {"DATABASE_URL": f"postgresql://app:{WRONG}@127.0.0.1:port/ledger"},
    "unbracketed IPv6 host": {"DATABASE_URL": f"postgresql://app:{WRONG}@::1:5432/ledger"},
    "unencoded / in the password": {"DATABASE_URL": f"postgresql://app:2024/{WRONG}@127.0.0.1/ledger"},
    "query password, bad port": {"DATABASE_URL": f"postgresql://app@127.0.0.1:x/ledger?password={WRONG}"},
    "bad replica URL": {
        "DATABASE_URL": "postgresql://app@127.0.0.1:1/ledger",
        "DATABASE_REPLICA_URLS": f"postgresql://ro:{WRONG}@127.0.0.1:bad/ledger",
    },
    "bad migration URL": {
        "DATABASE_URL": "postgresql://app@127.0.0.1:1/ledger",
        "HEX_MIGRATION__URL": f"postgres://owner:{OWNER_PASSWORD}@[::1/ledger",
    },
    "unknown variable holding a secret": {"HEX_DATABASE__PASSWORD": WRONG},
    "plain DSN where JSON is expected": {"HEX_DATABASE__REPLICA_URLS": f"postgresql://ro:{WRONG}@r/ledger"},
    "TLS key passphrase with a mode too weak": {
        "HEX_TLS__MODE": "prefer",
        "HEX_TLS__CERT_FILE": "/c.pem",
        "HEX_TLS__KEY_PASSWORD": KEY_PASSWORD,
    },
}


@pytest.mark.parametrize("env", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_a_rejected_setting_stops_the_cli_naming_the_field_and_printing_no_secret(
    env: dict[str, str],
) -> None:
    done = run_cli("migrate", env={**env, "HEX_LOGGING__LEVEL": "debug"}, timeout_s=60)

    assert done.returncode == 2, done.stderr[-2000:]
    assert "alchemy-hex: error: invalid settings:" in done.stderr
    _assert_no_secret(done)


def test_a_query_string_password_is_never_printed_when_the_server_is_unreachable() -> None:
    env = {
        "DATABASE_URL": f"postgresql://app@127.0.0.1:1/ledger?password={WRONG}",
        "HEX_ENVIRONMENT": "test",
        "HEX_LOGGING__LEVEL": "debug",
        "HEX_LOGGING__FORMAT": "json",
    }

    done = run_cli("balance", "00000000-0000-0000-0000-000000000001", env=env, timeout_s=60)

    assert done.returncode != 0
    assert "database unavailable" in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[RedisServer]:
    with RedisServer(password=REDIS_PASSWORD) as server:
        yield server


@pytest.mark.parametrize("password", [REDIS_PASSWORD, WRONG], ids=["right password", "wrong password"])
def test_the_redis_password_is_never_printed_whether_redis_lets_the_service_in_or_not(
    setup: Setup, redis_with_password: RedisServer, password: str
) -> None:
    env = setup.env(
        "file_app",
        HEX_CREDENTIALS__SOURCE="file",
        HEX_CREDENTIALS__PASSWORD_FILE=str(setup.password_file),
        HEX_RATE_LIMITER__IMPLEMENTATION="redis",
        HEX_CIRCUIT_BREAKER__IMPLEMENTATION="shared_redis",
        HEX_REDIS__URL=f"redis://:{password}@127.0.0.1:{redis_with_password.port}/0",
        HEX_REDIS__CALL_TIMEOUT_S="1",
        HEX_REDIS__CONNECT_TIMEOUT_S="1",
    )

    done = run_cli("open-account", "secret keeper", env=env)

    # Refused by Redis, the limiter fails open: the service still works, and says so in its log.
    assert done.returncode == 0, done.stderr[-2000:]
    assert "account_id" in done.stdout
    assert ("rate_limiter.redis_unavailable" in done.stderr) is (password == WRONG)
    _assert_no_secret(done)


def test_a_bad_redis_url_names_the_setting_and_not_the_password(setup: Setup) -> None:
    env = setup.env(
        "file_app",
        HEX_RATE_LIMITER__IMPLEMENTATION="redis",
        HEX_REDIS__URL=f"http://:{REDIS_PASSWORD}@127.0.0.1:1/0",
    )

    done = run_cli("open-account", "secret keeper", env=env)

    assert done.returncode == 2
    assert "redis.url" in done.stderr
    _assert_no_secret(done)
