"""Client instructions per operation, counted by callgrind: a figure a loaded machine cannot move.

``python -m tests.benchmarks.instructions`` runs each operation 100 and then 600 times, one at a
time, in a Python process under ``valgrind --tool=callgrind``, and reports the difference divided
by 500: start-up, imports and the pool's first connections cancel out, what is left is the cost of
one more operation in this process (the server's work is not counted: it runs elsewhere). The
wall-clock ratios of ``make bench`` swing by 15 % on a shared 2-core machine; these do not.
``--ops d_hex_provider,e_hex_unit_of_work`` picks some. Prints a table and the ratios, and merges
``instructions`` into ``bench-results.json``.

Besides the default operations, what telemetry costs the unit of work, on request (``--ops``):
``e_api`` is (e) with its provider observed through the OpenTelemetry API and no SDK, ``e_sdk``
the same with the SDK's meter provider (histograms aggregated); ``u_use_case`` is a use case around
(e) on the API's global no-op providers, ``u_use_case_sdk`` with spans and histograms recorded
by the SDK (no exporter).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
OPS: Final = (
    "b_sqlalchemy_connect",
    "c_sqlalchemy_session",
    "d_hex_provider",
    "e_hex_unit_of_work",
    "f_sqlalchemy_orm_session",
    "g_hex_orm_unit_of_work",
)
#: Counted only when asked for: what the telemetry adds (see above).
TELEMETRY_OPS: Final = ("e_api", "e_sdk", "u_use_case", "u_use_case_sdk")
RATIOS: Final = {
    "provider_vs_sqlalchemy": ("d_hex_provider", "b_sqlalchemy_connect"),
    "uow_vs_session": ("e_hex_unit_of_work", "c_sqlalchemy_session"),
    "orm_uow_vs_session": ("g_hex_orm_unit_of_work", "f_sqlalchemy_orm_session"),
}
SMALL, LARGE = 100, 600
#: The ORM operations cycle over the first 100 of the seeded authors.
ORM_KEYS: Final = 100


async def _run_op(dsn: str, name: str, count: int) -> None:
    """The child's work: ``count`` times the operation ``name``, sequentially."""
    from adapters.sqlalchemy.ledger.repositories import ledger_repositories
    from tests.benchmarks.operations import operations

    meter_provider, tracer_provider = _telemetry_providers(name)
    compared = operations(dsn, pool_size=2, orm_rows=ORM_KEYS, **_observed(name, meter_provider))
    ops = compared.compared()
    if name in ("e_api", "e_sdk"):
        op = ops["e_hex_unit_of_work"]
    elif name.startswith("u_"):
        ledger_unit = functools.partial(compared.unit, ledger_repositories)
        op = _select_one_use_case(lambda **_: ledger_unit(), meter_provider, tracer_provider).__call__
    else:
        op = ops[name]
    try:
        for _ in range(3):  # both pools' connections opened before the counted part
            await op()
        for _ in range(count):
            await op()
    finally:
        await compared.aclose()


def _telemetry_providers(name: str) -> tuple[Any, Any]:
    """The SDK's meter and tracer providers for the ``_sdk`` operations, else ``(None, None)``."""
    if not name.endswith("_sdk"):
        return None, None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    return MeterProvider(), TracerProvider()


def _observed(name: str, meter_provider: Any) -> dict[str, Any]:
    """The provider's ``observe`` argument for the operations whose pool is observed."""
    if name not in ("e_api", "e_sdk"):
        return {}
    from opentelemetry import metrics

    from adapters.opentelemetry import OtelPoolObservers

    return {"observe": OtelPoolObservers((meter_provider or metrics.get_meter_provider()).get_meter("x"))}


def _select_one_use_case(uow_factory: Callable[..., Any], meter_provider: Any, tracer_provider: Any) -> Any:
    """A use case running ``SELECT 1`` in a unit of work, its telemetry the SDK's when given."""
    from app.metrics import Metrics
    from app.retry import RetryPolicy
    from app.retry_budget import UnlimitedRetryBudget
    from app.telemetry import UseCaseTelemetry
    from app.use_case import UseCase
    from ports.unit_of_work import UnitOfWork
    from tests.benchmarks.operations import SELECT_1

    class SelectOne(UseCase[Any]):
        operation = "select_one"

        async def __call__(self) -> None:
            async def body(uow: UnitOfWork[Any]) -> None:
                await uow.connection.execute(SELECT_1)  # type: ignore[attr-defined]  # the SQLAlchemy unit

            await self.run(body)

    extra: dict[str, Any] = {}
    if tracer_provider is not None:
        extra["telemetry"] = UseCaseTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return SelectOne(
        uow_factory=uow_factory,
        retry_policy=RetryPolicy(wait=False),
        retry_budget=UnlimitedRetryBudget(),
        metrics=Metrics(),
        **extra,
    )


async def _seed(dsn: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from adapters.sqlalchemy.targets import asyncpg_url
    from tests.benchmarks.operations import seed_orm_rows

    engine = create_async_engine(asyncpg_url(dsn))
    try:
        await seed_orm_rows(engine)  # the same rows as make bench
    finally:
        await engine.dispose()


def _instructions(dsn: str, name: str, count: int, out: Path) -> int:
    target = out / f"{name}-{count}.out"
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={target}",
            sys.executable,
            "-m",
            "tests.benchmarks.instructions",
            "--child",
            name,
            str(count),
            dsn,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{name} x{count} under callgrind failed: {done.stderr[-1500:]}")
    return int(found.group(1))


@contextmanager
def _server() -> Iterator[str]:
    import os

    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield url
        return
    from adapters.postgres.cluster import PostgresCluster, find_binaries

    with PostgresCluster(binaries=find_binaries()) as cluster:
        yield cluster.dsn()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", nargs=3, metavar=("OP", "COUNT", "DSN"), help=argparse.SUPPRESS)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated operations to count")
    args = parser.parse_args()
    if args.child:
        name, count, dsn = args.child
        asyncio.run(_run_op(dsn, name, int(count)))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind)")
    chosen = [op for op in args.ops.split(",") if op]
    known = (*OPS, *TELEMETRY_OPS)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise SystemExit(f"unknown operations: {', '.join(unknown)} (known: {', '.join(known)})")
    per_op: dict[str, int] = {}
    with _server() as dsn, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_seed(dsn))
        for name in chosen:
            small = _instructions(dsn, name, SMALL, Path(tmp))
            large = _instructions(dsn, name, LARGE, Path(tmp))
            per_op[name] = round((large - small) / (LARGE - SMALL))
            print(f"{name:<28} {per_op[name]:>12,} instructions per operation", flush=True)
    ratios = {
        key: round(per_op[theirs] / per_op[ours], 3)
        for key, (ours, theirs) in RATIOS.items()
        if ours in per_op and theirs in per_op
    }
    for key, value in ratios.items():
        print(
            f"{key:<28} {value:>12} (theirs / ours: above 1 means fewer instructions than plain SQLAlchemy)"
        )
    path = ROOT / "bench-results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["instructions"] = {"per_operation": per_op, "ratios": ratios}
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
