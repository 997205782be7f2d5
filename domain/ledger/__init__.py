"""The example domain: a small money ledger (values and rules). Replace it with your own."""

from domain.ledger.model import (
    MAX_AMOUNT,
    MAX_KEY_LENGTH,
    MAX_OWNER_LENGTH,
    Account,
    AccountId,
    Entry,
    EntryKind,
    Transfer,
    TransferId,
    new_account_id,
    new_transfer_id,
    parse_account_id,
    plan_transfer,
    validate_amount,
    validate_text,
)

__all__ = [
    "MAX_AMOUNT",
    "MAX_KEY_LENGTH",
    "MAX_OWNER_LENGTH",
    "Account",
    "AccountId",
    "Entry",
    "EntryKind",
    "Transfer",
    "TransferId",
    "new_account_id",
    "new_transfer_id",
    "parse_account_id",
    "plan_transfer",
    "validate_amount",
    "validate_text",
]
