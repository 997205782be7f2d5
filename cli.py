"""alchemy-hex command line: ``migrate``, ``demo`` and the ledger's use cases.

With no ``DATABASE_URL`` every command runs on a throwaway local PostgreSQL of its own (a primary
and, for ``demo``, a streaming replica) started by the demo tooling in ``adapters/postgres`` from
local server binaries or those of the ``demo`` extra, and removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from adapters.postgres.errors import ClusterError
from adapters.sqlalchemy.migrations import migrate
from adapters.structlog.logging import SecretScrubber
from app.ledger.workload import LedgerWorkload, WorkloadPlan, WorkloadReport
from container import (
    Container,
    create_container,
    setup_logging,
    start_resources,
    stop_resources,
    watch_served_secrets,
)
from domain.errors import DomainError
from ports.errors import ConfigurationError, HexError
from settings import Settings, load_settings

log = structlog.get_logger("cli")


@contextlib.contextmanager
def embedded_database(settings: Settings, *, replicas: int) -> Iterator[Settings]:
    """``settings`` as given when a writer is configured, else pointed at a throwaway cluster."""
    if settings.database.url is not None:
        yield settings
        return
    # Demo tooling: imported only here, so that a service with a database of its own never loads it.
    from adapters.postgres.cluster import PostgresCluster, find_binaries

    with contextlib.ExitStack() as stack:
        primary = PostgresCluster(binaries=find_binaries())
        stack.callback(primary.destroy)
        primary.init()
        primary.start()
        replica_dsns = []
        for _ in range(replicas):
            replica = primary.create_replica()
            stack.callback(replica.destroy)
            replica_dsns.append(replica.dsn())
        database = settings.database.model_copy(update={"url": primary.dsn(), "replica_urls": ()})
        overrides = settings.model_dump(exclude={"database"})
        overrides["database"] = {**_unsecret(database.model_dump()), "replica_urls": replica_dsns}
        yield load_settings(**overrides)


def _unsecret(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in values.items()}


async def _with_container(
    settings: Settings, command: str, args: argparse.Namespace, scrubber: SecretScrubber
) -> dict[str, Any]:
    container = create_container(settings)
    watch_served_secrets(container, scrubber)
    await start_resources(container)
    try:
        await _migrate(container)
        if command == "migrate":
            return {"migrated": "head"}
        if command == "demo":
            return await _demo(container, args)
        return await _use_case(container, command, args)
    finally:
        await stop_resources(container)


async def _migrate(container: Container) -> None:
    """Migrate as the schema owner (``migration.url``), on a connection of its own."""
    provider = container.migration_provider()
    try:
        await migrate(provider)
    finally:
        await provider.aclose()


async def _use_case(container: Container, command: str, args: argparse.Namespace) -> dict[str, Any]:
    if command == "open-account":
        return {"account_id": str(await container.open_account()(args.owner))}
    if command == "deposit":
        receipt = await container.deposit()(args.account, args.amount, idempotency_key=args.key)
        return {"transfer_id": str(receipt.transfer_id), "replayed": receipt.replayed}
    if command == "transfer":
        receipt = await container.transfer()(
            args.source, args.destination, args.amount, idempotency_key=args.key
        )
        return {"transfer_id": str(receipt.transfer_id), "replayed": receipt.replayed}
    if command == "balance":
        return {"balance": await container.get_balance()(args.account)}
    statement = await container.get_statement()(args.account, limit=args.limit)
    return {
        "balance": statement.balance,
        "entries": [
            {"kind": e.kind.value, "amount": e.amount, "transfer_id": str(e.transfer_id)}
            for e in statement.entries
        ],
    }


async def _demo(container: Container, args: argparse.Namespace) -> dict[str, Any]:
    workload = LedgerWorkload(
        open_account=container.open_account(),
        deposit=container.deposit(),
        transfer=container.transfer(),
        get_balance=container.get_balance(),
        audit=container.audit_ledger(),
        settle=container.connection_provider().wait_for_replay,
        stop=_stop_on_signals(),
    )
    plan = WorkloadPlan(accounts=args.accounts, workers=args.workers, duration_s=args.seconds)
    show = not args.json and sys.stderr.isatty()
    progress = asyncio.create_task(_show_progress(workload)) if show else None
    try:
        report = await workload.run(plan)
    finally:
        if progress is not None:
            progress.cancel()
    return _summary(container, report) | {"acknowledged_keys": report.progress.acknowledged}


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the workload stops taking new work and drains."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(name: str) -> None:
        log.warning("shutdown.requested", signal=name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum.name)
    return stop


async def _show_progress(workload: LedgerWorkload) -> None:
    while True:
        p = workload.progress
        sys.stderr.write(
            f"\r  operations {p.total:7d}   ok {sum(p.ok.values()):7d}   failed {sum(p.failed.values()):5d}"
        )
        sys.stderr.flush()
        await asyncio.sleep(0.25)


def _summary(container: Container, report: WorkloadReport) -> dict[str, Any]:
    stats = container.connection_provider().stats()
    p = report.progress
    return {
        "elapsed_s": round(report.elapsed_s, 3),
        "operations": {k: {"ok": p.ok[k], "failed": p.failed[k]} for k in sorted({*p.ok, *p.failed})},
        "errors": dict(p.errors),
        "idempotent_replays_applied_once": p.replays_applied_once,
        "retries": container.metrics().snapshot()["retries"],
        "reads": {
            "by_target": dict(stats.reads_by_target),
            "served_in_recovery": stats.reads_in_recovery,
            "writer_fallbacks": stats.writer_fallbacks,
            # Why each read ran where it did (see ports.connection_provider.ReadRoute).
            "routes": dict(stats.read_routes),
            "causal_waits": stats.causal_waits,
            "replicas": [
                {
                    "name": r.name,
                    "healthy": r.healthy,
                    "ejected": r.ejected,
                    "lag_s": None if r.lag_s is None else round(r.lag_s, 4),
                    "reads": r.reads,
                    "lag_skips": r.lag_skips,
                    "ejections": r.ejections,
                    "readmissions": r.readmissions,
                }
                for r in stats.replicas
            ],
        },
        "pools": [
            {
                "target": t.name,
                "role": t.role,
                "size": t.size,
                "in_use": t.in_use,
                "idle": t.idle,
                "checkouts": t.served,
                "timeouts": t.timed_out,
                "in_recovery": t.in_recovery,
            }
            for t in stats.targets
        ],
        "balance_check": {
            "before": report.total_before,
            "after": report.total_after,
            "entries": report.entries_total,
            "passed": report.balance_unchanged,
        },
    }


def _print_summary(summary: dict[str, Any]) -> None:
    ops = "  ".join(
        f"{kind}: {v['ok']} ok / {v['failed']} failed" for kind, v in summary["operations"].items()
    )
    reads = summary["reads"]
    check = summary["balance_check"]
    print(f"\noperations  {ops}")
    print(f"errors      {summary['errors'] or 'none'}")
    print(
        f"retries     {summary['retries'] or 'none'}   idempotent replays applied once: "
        f"{summary['idempotent_replays_applied_once']}"
    )
    print(
        f"reads       by target {reads['by_target']}   served by a server in recovery: "
        f"{reads['served_in_recovery']}   writer fallbacks: {reads['writer_fallbacks']}"
    )
    print(f"routes      {reads['routes'] or 'none'}")
    for replica in reads["replicas"]:
        print(
            f"replica     {replica['name']:<10} healthy={replica['healthy']} ejected={replica['ejected']} "
            f"lag_s={replica['lag_s']} reads={replica['reads']} lag_skips={replica['lag_skips']} "
            f"ejections={replica['ejections']} readmissions={replica['readmissions']}"
        )
    for pool in summary["pools"]:
        print(
            f"pool        {pool['target']:<10} size={pool['size']} in_use={pool['in_use']} "
            f"idle={pool['idle']} checkouts={pool['checkouts']} timeouts={pool['timeouts']} "
            f"in_recovery={pool['in_recovery']}"
        )
    verdict = "PASSED" if check["passed"] else "FAILED"
    print(
        f"balance     before={check['before']} after={check['after']} entries={check['entries']}  {verdict}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alchemy-hex", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the schema to the newest revision (under an advisory lock)")
    demo = sub.add_parser("demo", help="run a concurrent ledger workload and print a summary")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--workers", type=int, default=16)
    demo.add_argument("--accounts", type=int, default=20)
    demo.add_argument("--ack-file", help="write the idempotency key of every acknowledged transfer here")
    demo.add_argument(
        "--replicas", type=int, default=1, help="replicas of the embedded server (no DATABASE_URL)"
    )
    sub.add_parser("open-account").add_argument("owner")
    for name in ("deposit", "balance", "statement"):
        cmd = sub.add_parser(name)
        cmd.add_argument("account")
        if name == "deposit":
            cmd.add_argument("amount", type=int)
            cmd.add_argument("--key", required=True, help="idempotency key")
        if name == "statement":
            cmd.add_argument("--limit", type=int, default=50)
    transfer = sub.add_parser("transfer")
    transfer.add_argument("source")
    transfer.add_argument("destination")
    transfer.add_argument("amount", type=int)
    transfer.add_argument("--key", required=True, help="idempotency key")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status.

    0 ok; 1 refused by a rule or the database, or no throwaway server without ``DATABASE_URL``;
    2 bad input or settings.
    """
    args = _parser().parse_args(argv)
    scrubber = SecretScrubber()
    try:
        settings = load_settings()
        scrubber = setup_logging(settings)
        if args.command == "demo" and not (
            1 <= args.workers <= 1000 and 1 <= args.accounts <= 10_000 and args.seconds > 0
        ):
            raise DomainError("demo needs 1-1000 workers, 1-10000 accounts and a positive duration")
        with embedded_database(settings, replicas=args.replicas if args.command == "demo" else 0) as ready:
            if getattr(args, "ack_file", None):
                # Created up front so that a crash before the end still leaves a file to read.
                Path(args.ack_file).write_text("")
            result = asyncio.run(_with_container(ready, args.command, args, scrubber))
    except (HexError, DomainError) as error:
        print(f"alchemy-hex: error: {scrubber.scrub(str(error))}", file=sys.stderr)
        return 2 if isinstance(error, DomainError | ConfigurationError) else 1
    except ClusterError as error:
        # Only the throwaway server raises it: say so, and how to do without one.
        print(
            "alchemy-hex: error: DATABASE_URL is not set, and the throwaway PostgreSQL server used "
            f"instead failed: {scrubber.scrub(str(error))}",
            file=sys.stderr,
        )
        return 1
    except Exception as error:
        # A bug, not a refusal: say so plainly (scrubbed) instead of dumping a driver traceback.
        first_line = str(error).splitlines()[0] if str(error) else ""
        print(
            f"alchemy-hex: internal error: {type(error).__name__}: {scrubber.scrub(first_line)}",
            file=sys.stderr,
        )
        return 1
    acknowledged = result.pop("acknowledged_keys", [])
    if getattr(args, "ack_file", None):
        Path(args.ack_file).write_text("".join(f"{key}\n" for key in acknowledged))
    if args.command == "demo" and not args.json:
        _print_summary(result)
    else:
        print(json.dumps(result))
    return 0 if result.get("balance_check", {}).get("passed", True) else 1


def main() -> None:
    """Console-script entry point."""
    raise SystemExit(run())


if __name__ == "__main__":
    main()
