"""9. Bad input of every kind: each gets a clear error naming the problem, and no password leaks.

Three fronts: settings refused at start-up (in process, many at once); the CLI against a
password-protected throwaway server (wrong password, unreachable host, bad sizes and policy names
in the environment), with everything it printed grepped for the password; and hostile use-case
arguments through a running service, with the ledger checked afterwards.
``tests/e2e/test_cli.py`` and ``tests/integration/test_hostile_input.py`` hold the single cases.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from adapters.postgres.cluster import PostgresCluster, find_binaries
from domain import errors as domain
from domain.ledger import errors as ledger_errors
from ports.errors import ConfigurationError
from settings import load_settings
from tests.chaos.harness import (
    ChaosLab,
    Scale,
    ScenarioReport,
    Service,
    admin_dsn_of,
    capacity_of,
    leaked_after_shutdown,
    leaked_while_running,
    report,
    running_service,
    settings_for,
)
from tests.chaos.ledger import AckLedger, Request
from tests.chaos.load import Load
from tests.chaos.scenarios_process import cli_env
from tests.integration.test_hostile_input import HOSTILE
from tests.support import CLI

PASSWORD: Final = "Quokka-Tundra-6620-secret"
#: Every form the password could leak in: itself, its start, the wrong one tried.
LEAK_FORMS: Final = (PASSWORD, PASSWORD[:12], PASSWORD + "-wrong")
GOOD_DSN: Final = f"postgresql://app:{PASSWORD}@127.0.0.1:5432/ledger"


@dataclass(frozen=True, slots=True)
class Tally:
    """Cases that behaved: valid hostile input accepted, bad input refused cleanly; and what did not."""

    accepted: int = 0
    refused: int = 0
    problems: tuple[str, ...] = ()

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.accepted + other.accepted, self.refused + other.refused, self.problems + other.problems
        )


def _leaks(text: str) -> bool:
    return any(form in text for form in LEAK_FORMS)


SETTINGS_CASES: Final[list[tuple[str, dict[str, Any], str]]] = [
    ("malformed port", {"database": {"url": GOOD_DSN.replace(":5432", ":notaport")}}, "database.url"),
    ("wrong scheme", {"database": {"url": GOOD_DSN.replace("postgresql", "mysql")}}, "database.url"),
    ("no host", {"database": {"url": f"postgresql://app:{PASSWORD}@/ledger"}}, "database.url"),
    ("bad replica", {"database": {"replica_urls": [f"redis://app:{PASSWORD}@h/0"]}}, "database.replica_urls"),
    ("negative pool", {"database": {"pool_size": -1}}, "database.pool_size"),
    ("negative overflow", {"database": {"max_overflow": -5}}, "database.max_overflow"),
    ("zero timeout", {"database": {"acquire_timeout_s": 0}}, "database.acquire_timeout_s"),
    ("huge pool", {"database": {"pool_size": 10**9}}, "database.pool_size"),
    ("unknown field", {"database": {"pool_sise": 3}}, "database.pool_sise"),
    ("unknown isolation", {"database": {"isolation_level": "READ UNCOMMITTED"}}, "database.isolation_level"),
    ("unknown breaker", {"circuit_breaker": {"implementation": "bogus"}}, "circuit_breaker.implementation"),
    ("unknown limiter", {"rate_limiter": {"implementation": "leaky"}}, "rate_limiter.implementation"),
    ("unknown strategy", {"replicas": {"strategy": "by_moon_phase"}}, "replicas.strategy"),
    ("unknown budget", {"retry": {"budget": "infinite"}}, "retry.budget"),
    ("unknown environment", {"environment": "staging"}, "environment"),
    ("negative retries", {"retry": {"max_attempts": -1}}, "retry.max_attempts"),
]


def _settings_cases() -> Tally:
    """Each bad setting raises ``ConfigurationError`` naming the field, never the password."""
    refused, problems = 0, []
    for name, overrides, field in SETTINGS_CASES:
        groups = dict(overrides)
        groups["database"] = {"url": GOOD_DSN, **groups.get("database", {})}
        try:
            load_settings(**{"environment": "test", **groups})
        except ConfigurationError as error:
            if field not in str(error) or _leaks(str(error)):
                problems.append(f"settings {name}: unclear or leaking message: {str(error)[:200]}")
            else:
                refused += 1
            continue
        problems.append(f"settings {name}: accepted")
    return Tally(refused=refused, problems=tuple(problems))


@dataclass(frozen=True, slots=True)
class CliCase:
    """One CLI run: its arguments and environment, the exit status and words its error must have."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    status: int
    says: str


def _cli_cases(server: PostgresCluster, scale: Scale) -> list[CliCase]:
    good = server.dsn(password=PASSWORD)
    unknown = str(uuid.uuid4())
    cases = [
        CliCase(
            "wrong password",
            ("balance", unknown),
            {"DATABASE_URL": server.dsn(password=PASSWORD + "-wrong")},
            1,
            "password authentication failed",
        ),
        CliCase(
            "unreachable host",
            ("balance", unknown),
            {"DATABASE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres"},
            1,
            "database unavailable",
        ),
        CliCase(
            "negative pool size",
            ("migrate",),
            {"DATABASE_URL": good, "HEX_DATABASE__POOL_SIZE": "-3"},
            2,
            "database.pool_size",
        ),
        CliCase(
            "unknown breaker",
            ("migrate",),
            {"DATABASE_URL": good, "HEX_CIRCUIT_BREAKER__IMPLEMENTATION": "bogus"},
            2,
            "circuit_breaker.implementation",
        ),
    ]
    if scale.full:
        cases += [
            CliCase(
                "malformed port",
                ("migrate",),
                {"DATABASE_URL": good.replace(f":{server.port}", ":notaport")},
                2,
                "database.url",
            ),
            CliCase(
                "retries not a number",
                ("migrate",),
                {"DATABASE_URL": good, "HEX_RETRY__MAX_ATTEMPTS": "many"},
                2,
                "retry.max_attempts",
            ),
            CliCase(
                "hostile account id",
                ("balance", HOSTILE[0]),
                {"DATABASE_URL": good},
                2,
                "account id must be a UUID",
            ),
            CliCase(
                "negative deposit",
                ("deposit", unknown, "-5", "--key", "k"),
                {"DATABASE_URL": good},
                2,
                "amount must be positive",
            ),
        ]
    return cases


async def _run_cli(case: CliCase) -> Tally:
    env = cli_env(HEX_DATABASE__CONNECT_TIMEOUT_S="2", HEX_LOGGING__LEVEL="debug", **case.env)
    process = await asyncio.create_subprocess_exec(
        CLI, *case.args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    captured = stdout.decode() + stderr.decode()
    problems = []
    if _leaks(captured):
        problems.append(f"cli {case.name}: the password appears in the output")
    if (
        process.returncode != case.status
        or case.says not in captured
        or "alchemy-hex: error:" not in captured
    ):
        problems.append(f"cli {case.name}: exit {process.returncode}, said {stderr.decode()[-300:]!r}")
    return Tally(refused=0 if problems else 1, problems=tuple(problems))


async def _cli_front(scale: Scale) -> Tally:
    server = await asyncio.to_thread(PostgresCluster(binaries=find_binaries(), password=PASSWORD).__enter__)
    try:
        # Concurrently: each run is mostly interpreter start-up.
        tallies = await asyncio.gather(*(_run_cli(case) for case in _cli_cases(server, scale)))
    finally:
        await asyncio.to_thread(server.destroy)
    return sum(tallies, Tally())


UseCaseCall = Callable[[Service], Awaitable[object]]


def _hostile_calls(
    service: Service, ledger: AckLedger
) -> list[tuple[str, UseCaseCall, type[Exception] | None]]:
    """(name, call, expected domain error or ``None`` when it must succeed)."""
    c, (a, b) = service.container, service.accounts[:2]
    reused = f"reused-{uuid.uuid4().hex}"

    # ``amount`` is ``Any``: a hostile caller ignores the type hints, which is the point here.
    def transfer(source: object, destination: object, amount: Any, key: str | None = None) -> UseCaseCall:
        key = key or f"hostile-{uuid.uuid4().hex}"

        async def call(s: Service) -> object:
            receipt = await c.transfer()(source, destination, amount, idempotency_key=key)
            ledger.acknowledged(Request(key, str(source), str(destination), int(str(amount))))
            return receipt

        return call

    def open_account(owner: str) -> UseCaseCall:
        return lambda s: c.open_account()(owner)

    calls: list[tuple[str, UseCaseCall, type[Exception] | None]] = [
        (f"owner {text[:20]!r}", open_account(text), None) for text in HOSTILE
    ]
    calls += [
        ("key with SQL", transfer(a, b, 1, "k'); DELETE FROM transfers; --"), None),
        ("first use of a key", transfer(a, b, 2, reused), None),
        (
            "key reused for another request",
            transfer(a, b, 3, reused),
            ledger_errors.IdempotencyKeyReusedError,
        ),
        ("huge amount", transfer(a, b, 10**30), ledger_errors.InvalidAmountError),
        ("negative amount", transfer(a, b, -5), ledger_errors.InvalidAmountError),
        ("zero amount", transfer(a, b, 0), ledger_errors.InvalidAmountError),
        ("fractional amount", transfer(a, b, 1.5), ledger_errors.InvalidAmountError),
        ("boolean amount", transfer(a, b, True), ledger_errors.InvalidAmountError),
        ("text amount", transfer(a, b, "100"), ledger_errors.InvalidAmountError),
        ("more than the balance", transfer(a, b, 10**14), ledger_errors.InsufficientFundsError),
        ("same account", transfer(a, a, 1), ledger_errors.SameAccountTransferError),
        ("account id with SQL", transfer("1 OR 1=1", b, 1), domain.InvalidArgumentError),
        ("unknown account", transfer(a, uuid.uuid4(), 1), ledger_errors.UnknownAccountError),
        ("oversize key", transfer(a, b, 1, "k" * 100_000), domain.InvalidArgumentError),
        ("oversize owner", open_account("o" * 100_000), domain.InvalidArgumentError),
        ("NUL in owner", open_account("nul\x00byte"), domain.InvalidArgumentError),
        ("statement limit huge", lambda s: c.get_statement()(a, limit=10**9), domain.InvalidArgumentError),
        ("statement limit negative", lambda s: c.get_statement()(a, limit=-1), domain.InvalidArgumentError),
    ]
    return calls


async def _use_case_front(service: Service, ledger: AckLedger) -> Tally:
    accepted = refused = 0
    problems = []
    for name, call, expected in _hostile_calls(service, ledger):
        try:
            await call(service)
        except Exception as error:
            if expected is not None and isinstance(error, expected) and str(error):
                refused += 1
            else:
                problems.append(f"use case {name}: {type(error).__name__}: {str(error)[:200]}")
            continue
        if expected is None:
            accepted += 1
        else:
            problems.append(f"use case {name}: accepted, expected {expected.__name__}")
    return Tally(accepted, refused, tuple(problems))


async def bad_input(lab: ChaosLab, scale: Scale) -> ScenarioReport:
    """9. Bad settings, a wrong password, an unreachable host, hostile use-case arguments."""
    dsn = await asyncio.to_thread(lab.fresh_database)
    app = "chaos-bad-input"
    settings = settings_for(dsn, app=app)
    ledger = AckLedger()
    cli = asyncio.create_task(_cli_front(scale))
    tally = _settings_cases()
    async with running_service(settings, accounts=2) as service:
        tally += await _use_case_front(service, ledger)
        leaked, _ = await leaked_while_running(admin_dsn_of(dsn), app, capacity_of(settings))
        total_before = service.total_before
        empty = Load(service, ledger, workers=0)
    tally += await cli
    leaked += await leaked_after_shutdown(admin_dsn_of(dsn), app)
    verdict = await ledger.verify(dsn, total_before=total_before)
    cases = tally.accepted + tally.refused + len(tally.problems)
    notes = [f"{cases} cases: {tally.accepted} hostile but valid accepted, {tally.refused} refused cleanly"]
    return report(
        "bad-input",
        loads=[empty],
        verdict=verdict,
        leaked_sessions=leaked,
        recovery_s=None,
        notes=notes,
        problems=list(tally.problems),
        extra_ok=tally.accepted,
        extra_failed_clean=tally.refused,
    )
