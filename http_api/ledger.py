"""The ledger's endpoints: open an account, deposit, transfer, balance, statement.

Routes translate HTTP to use-case calls and nothing else: the body is validated by its model,
the rules by the domain, and every error leaves through the problem mapping (``LEDGER_PROBLEMS``
for the ledger's own rule violations). Deposits and transfers need an ``Idempotency-Key``
(see :mod:`http_api.idempotency`). An adopter replaces this module with their domain's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.ledger.use_cases import Deposit as DepositUseCase
from app.ledger.use_cases import GetBalance, GetStatement, OpenAccount, TransferMoney, TransferReceipt
from domain.ledger.errors import (
    IdempotencyKeyReusedError,
    InsufficientFundsError,
    InvalidAmountError,
    SameAccountTransferError,
    UnknownAccountError,
)
from http_api.idempotency import HEADER, REPLAYED_HEADER, InFlightKeys, fingerprint, parse_key
from http_api.problems import PROBLEM_JSON, DomainProblem
from http_api.state import services_of

LEDGER_PROBLEMS: Final = (
    DomainProblem(UnknownAccountError, 404, "unknown-account", "Unknown account"),
    DomainProblem(InsufficientFundsError, 409, "insufficient-funds", "Insufficient funds"),
    DomainProblem(IdempotencyKeyReusedError, 422, "idempotency-key-reused", "Idempotency key reused"),
    DomainProblem(InvalidAmountError, 422, "invalid-amount", "Invalid amount"),
    DomainProblem(SameAccountTransferError, 422, "same-account", "Same account"),
)


@dataclass(frozen=True, slots=True)
class LedgerServices:
    """The ledger's use cases, built once at start-up (a use case is safe to share between requests)."""

    open_account: OpenAccount
    deposit: DepositUseCase
    transfer: TransferMoney
    get_balance: GetBalance
    get_statement: GetStatement
    in_flight: InFlightKeys


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenAccountIn(_Body):
    owner: str = Field(description="the account's owner, 1 to 200 characters")


class AccountOut(BaseModel):
    account_id: uuid.UUID
    owner: str
    balance: int


class DepositIn(_Body):
    amount: StrictInt = Field(description="minor units (cents), a positive whole number")


class TransferIn(_Body):
    source: uuid.UUID
    destination: uuid.UUID
    amount: StrictInt = Field(description="minor units (cents), a positive whole number")


class TransferOut(BaseModel):
    transfer_id: uuid.UUID
    source: uuid.UUID | None = Field(description="null for a deposit")
    destination: uuid.UUID
    amount: int


class BalanceOut(BaseModel):
    account_id: uuid.UUID
    balance: int


class EntryOut(BaseModel):
    kind: str
    amount: int
    transfer_id: uuid.UUID
    created_at: datetime | None


class StatementOut(BaseModel):
    account_id: uuid.UUID
    balance: int
    entries: list[EntryOut]


def _problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    schema: dict[str, object] = {
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    }
    return {status: {"description": "problem details (RFC 9457)", **schema} for status in statuses}


_IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description='a Structured Field string, e.g. "8e03978e-40d5-43e8-bc93-6894a57f9324"; required',
    ),
]
_WRITE_PROBLEMS: Final = _problems(400, 404, 409, 422, 429, 503)
_READ_PROBLEMS: Final = _problems(404, 422, 429, 503)

router = APIRouter(tags=["ledger"])


@router.post("/accounts", status_code=201, response_model=AccountOut, responses=_problems(422, 429, 503))
async def open_account(body: OpenAccountIn, request: Request, response: Response) -> AccountOut:
    """Open an account with a zero balance."""
    account_id = await services_of(request, LedgerServices).open_account(body.owner)
    response.headers["location"] = f"/accounts/{account_id}"
    return AccountOut(account_id=account_id, owner=body.owner, balance=0)


@router.post(
    "/accounts/{account_id}/deposits", status_code=201, response_model=TransferOut, responses=_WRITE_PROBLEMS
)
async def deposit(
    account_id: uuid.UUID,
    body: DepositIn,
    request: Request,
    response: Response,
    idempotency_key: _IdempotencyKey = None,
) -> TransferOut:
    """Credit an account, once per idempotency key."""
    key = parse_key(request.headers.getlist(HEADER))
    services = services_of(request, LedgerServices)
    digest = fingerprint("deposit", {"account_id": str(account_id), "amount": body.amount})
    with services.in_flight.hold(key, digest):
        receipt = await services.deposit(account_id, body.amount, idempotency_key=key)
    return _transfer_out(receipt, None, account_id, body.amount, response)


@router.post("/transfers", status_code=201, response_model=TransferOut, responses=_WRITE_PROBLEMS)
async def transfer(
    body: TransferIn, request: Request, response: Response, idempotency_key: _IdempotencyKey = None
) -> TransferOut:
    """Move money between two accounts, once per idempotency key; never below zero."""
    key = parse_key(request.headers.getlist(HEADER))
    services = services_of(request, LedgerServices)
    digest = fingerprint("transfer", body.model_dump(mode="json"))
    with services.in_flight.hold(key, digest):
        receipt = await services.transfer(body.source, body.destination, body.amount, idempotency_key=key)
    return _transfer_out(receipt, body.source, body.destination, body.amount, response)


def _transfer_out(
    receipt: TransferReceipt,
    source: uuid.UUID | None,
    destination: uuid.UUID,
    amount: int,
    response: Response,
) -> TransferOut:
    # A replay is the stored transfer: the ledger checked that it moved exactly these accounts and amount.
    if receipt.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return TransferOut(transfer_id=receipt.transfer_id, source=source, destination=destination, amount=amount)


@router.get("/accounts/{account_id}/balance", response_model=BalanceOut, responses=_READ_PROBLEMS)
async def balance(account_id: uuid.UUID, request: Request) -> BalanceOut:
    """An account's balance (a replica may serve it)."""
    value = await services_of(request, LedgerServices).get_balance(account_id)
    return BalanceOut(account_id=account_id, balance=value)


@router.get("/accounts/{account_id}/statement", response_model=StatementOut, responses=_READ_PROBLEMS)
async def statement(
    account_id: uuid.UUID,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="newest entries to return")] = 50,
) -> StatementOut:
    """An account's balance and its newest entries, newest first."""
    found = await services_of(request, LedgerServices).get_statement(account_id, limit=limit)
    entries = [
        EntryOut(kind=e.kind.value, amount=e.amount, transfer_id=e.transfer_id, created_at=e.created_at)
        for e in found.entries
    ]
    return StatementOut(account_id=account_id, balance=found.balance, entries=entries)
