"""The benchmark's baseline: the ledger's endpoints in plain FastAPI + SQLAlchemy, written the simple way.

One ``AsyncSession`` per request, one transaction, no policies (no rate limiter, circuit breaker,
admission gate, retries, read routing or timeouts of our own). It keeps the same contract where
correctness needs it: an ``Idempotency-Key`` header is required for deposits and transfers, and
the transfers table's unique key makes a repeat return the stored transfer. Run it with
``python -m tests.benchmarks.plain_http_server --port N`` and ``DATABASE_URL`` set.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel, StrictInt
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from adapters.sqlalchemy.ledger.tables import accounts, entries, transfers


class OpenAccountIn(BaseModel):
    owner: str


class DepositIn(BaseModel):
    amount: StrictInt


class TransferIn(BaseModel):
    source: uuid.UUID
    destination: uuid.UUID
    amount: StrictInt


def create_plain_app(url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = create_async_engine(url, pool_size=10, max_overflow=5)
        yield {"sessions": async_sessionmaker(engine, expire_on_commit=False)}
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    def session(request: Request) -> AsyncSession:
        made: AsyncSession = request.state.sessions()
        return made

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "pass"}

    @app.post("/accounts", status_code=201)
    async def open_account(body: OpenAccountIn, request: Request) -> dict[str, Any]:
        account_id = uuid.uuid4()
        async with session(request) as db, db.begin():
            await db.execute(accounts.insert().values(id=account_id, owner=body.owner, balance=0))
        return {"account_id": str(account_id), "owner": body.owner, "balance": 0}

    @app.post("/accounts/{account_id}/deposits", status_code=201)
    async def deposit(
        account_id: uuid.UUID,
        body: DepositIn,
        request: Request,
        key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict[str, Any]:
        return await _move(session(request), key, None, account_id, body.amount)

    @app.post("/transfers", status_code=201)
    async def transfer(
        body: TransferIn, request: Request, key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
    ) -> dict[str, Any]:
        return await _move(session(request), key, body.source, body.destination, body.amount)

    @app.get("/accounts/{account_id}/balance")
    async def balance(account_id: uuid.UUID, request: Request) -> dict[str, Any]:
        async with session(request) as db:
            found = (await db.execute(select(accounts.c.balance).where(accounts.c.id == account_id))).first()
        if found is None:
            raise HTTPException(404, "unknown account")
        return {"account_id": str(account_id), "balance": found.balance}

    @app.get("/accounts/{account_id}/statement")
    async def statement(
        account_id: uuid.UUID, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> dict[str, Any]:
        async with session(request) as db:
            found = (await db.execute(select(accounts.c.balance).where(accounts.c.id == account_id))).first()
            if found is None:
                raise HTTPException(404, "unknown account")
            rows = await db.execute(
                select(entries)
                .where(entries.c.account_id == account_id)
                .order_by(entries.c.id.desc())
                .limit(limit)
            )
        listed = [{"kind": r.kind, "amount": r.amount, "transfer_id": str(r.transfer_id)} for r in rows]
        return {"account_id": str(account_id), "balance": found.balance, "entries": listed}

    return app


async def _move(
    db: AsyncSession, key: str | None, source: uuid.UUID | None, destination: uuid.UUID, amount: int
) -> dict[str, Any]:
    if not key:
        raise HTTPException(400, "Idempotency-Key is required")
    key = key.strip().strip('"')
    if amount <= 0:
        raise HTTPException(422, "amount must be positive")
    involved = sorted({destination} if source is None else {source, destination})
    transfer_id = uuid.uuid4()
    async with db, db.begin():
        rows = await db.execute(
            select(accounts.c.id, accounts.c.balance)
            .where(accounts.c.id.in_(involved))
            .order_by(accounts.c.id)
            .with_for_update()
        )
        balances = {r.id: r.balance for r in rows}
        if len(balances) != len(involved):
            raise HTTPException(404, "unknown account")
        claimed = await db.execute(
            insert(transfers)
            .values(
                id=transfer_id,
                idempotency_key=key,
                source_id=source,
                destination_id=destination,
                amount=amount,
            )
            .on_conflict_do_nothing(index_elements=[transfers.c.idempotency_key])
            .returning(transfers.c.id)
        )
        if claimed.first() is None:
            existing = (await db.execute(select(transfers).where(transfers.c.idempotency_key == key))).one()
            if (existing.source_id, existing.destination_id, existing.amount) != (
                source,
                destination,
                amount,
            ):
                raise HTTPException(422, "idempotency key reused")
            transfer_id = existing.id
        else:
            if source is not None:
                if balances[source] < amount:
                    raise HTTPException(409, "insufficient funds")
                await db.execute(
                    accounts.update().where(accounts.c.id == source).values(balance=balances[source] - amount)
                )
                await db.execute(
                    entries.insert().values(
                        account_id=source, transfer_id=transfer_id, kind="transfer_out", amount=-amount
                    )
                )
            await db.execute(
                accounts.update()
                .where(accounts.c.id == destination)
                .values(balance=balances[destination] + amount)
            )
            kind = "deposit" if source is None else "transfer_in"
            await db.execute(
                entries.insert().values(
                    account_id=destination, transfer_id=transfer_id, kind=kind, amount=amount
                )
            )
    return {
        "transfer_id": str(transfer_id),
        "source": None if source is None else str(source),
        "destination": str(destination),
        "amount": amount,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
    uvicorn.run(
        create_plain_app(url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        loop="asyncio",
    )


if __name__ == "__main__":
    main()
