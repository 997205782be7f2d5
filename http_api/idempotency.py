"""The ``Idempotency-Key`` header (draft-ietf-httpapi-idempotency-key-header-06) on deposits and transfers.

Where each rule is kept:

- **The key** is a Structured Field String (``Idempotency-Key: "8e03978e-..."``); an unquoted
  token is tolerated. Missing, empty, repeated, malformed or longer than 200 characters: 400.
- **Applied once, the stored result after completion**: the ledger records each transfer under
  its key in the same transaction as its entries (``transfers.idempotency_key`` is unique), with
  the accounts and amount it moved. That row is the stored fingerprint and result: a repeat of a
  completed request is answered from it (the same transfer id, status and body, with
  ``Idempotent-Replayed: true``), and a repeat with other accounts or another amount is refused
  with 422 (``IdempotencyKeyReusedError``). Keeping the result in the transaction that applies it
  leaves no moment in which the effect is committed and the stored response is not. A request
  that failed stored nothing, so repeating it runs it again (the draft's SHOULD for errors is not
  followed: a failure here is a refusal or an outage, and a retry is what the client needs).
- **While the first is still running**: :class:`InFlightKeys` answers a repeat 409 at once (422
  when its body differs) within this process. A repeat that reaches another instance meanwhile
  waits at the key's unique index for the first to finish, then gets the stored result: never
  applied twice.
- **Scope and expiry**: keys are the ledger's, one namespace for deposits and transfers, kept as
  long as the transfer (the ledger is append-only), so they never expire.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from http_api.problems import Problem

HEADER: Final = "Idempotency-Key"
#: The ledger keeps keys of up to 200 characters; a longer one is a bad header, not a bad body.
MAX_KEY_LENGTH: Final = 200
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_TOKEN: Final = re.compile(r"[A-Za-z0-9*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*")


class IdempotencyHeaderError(Exception):
    """The header is missing, repeated or malformed: a 400 problem."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.problem = Problem(400, "idempotency-key-invalid", "Bad Idempotency-Key", detail)


def parse_key(values: list[str]) -> str:
    """The key of the request's ``Idempotency-Key`` header lines, or :class:`IdempotencyHeaderError`."""
    if not values:
        raise IdempotencyHeaderError(f"this request needs an {HEADER} header")
    if len(values) > 1:
        raise IdempotencyHeaderError(f"more than one {HEADER} header")
    value = values[0].strip(" \t")
    key = _sf_string(value) if value.startswith('"') else value if _TOKEN.fullmatch(value) else None
    if key is None:
        raise IdempotencyHeaderError(f'{HEADER} must be a quoted string, e.g. "8e03978e-40d5-43e8-bc93"')
    if not key.strip():
        raise IdempotencyHeaderError(f"{HEADER} must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise IdempotencyHeaderError(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters")
    return key


def _sf_string(value: str) -> str | None:
    """RFC 8941 §4.2.5: the string between the quotes with ``\\"`` and ``\\\\`` unescaped, or None."""
    chars: list[str] = []
    index = 1
    while index < len(value):
        char = value[index]
        if char == "\\":
            if index + 1 >= len(value) or value[index + 1] not in '"\\':
                return None
            chars.append(value[index + 1])
            index += 2
            continue
        if char == '"':
            # Nothing may follow the closing quote (parameters are not part of this header).
            return "".join(chars) if index == len(value) - 1 else None
        if not " " <= char <= "~":
            return None
        chars.append(char)
        index += 1
    return None


def fingerprint(operation: str, payload: Mapping[str, object]) -> str:
    """A digest of what a request asks for, its validated body in canonical JSON."""
    canonical = json.dumps([operation, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class KeyInFlightError(Exception):
    """A request with this key is still running in this process: 409, or 422 when it asks otherwise."""

    def __init__(self, key: str, *, same_request: bool, retry_after_s: int) -> None:
        super().__init__(key)
        if same_request:
            self.problem = Problem(
                409,
                "idempotency-key-in-flight",
                "Request in progress",
                "a request with this Idempotency-Key is still being processed; retry to get its result",
                retry_after_s,
            )
        else:
            self.problem = Problem(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key is in use by a request that asks for something else",
            )


class InFlightKeys:
    """The keys of the requests running in this process, with their fingerprints (one event loop)."""

    def __init__(self, *, retry_after_s: int = 1) -> None:
        self._running: dict[str, str] = {}
        self._retry_after_s = retry_after_s

    def __len__(self) -> int:
        return len(self._running)

    @contextmanager
    def hold(self, key: str, digest: str) -> Iterator[None]:
        """Hold ``key`` for the block, or raise :class:`KeyInFlightError` if a request holds it."""
        held = self._running.get(key)
        if held is not None:
            raise KeyInFlightError(key, same_request=held == digest, retry_after_s=self._retry_after_s)
        self._running[key] = digest
        try:
            yield
        finally:
            del self._running[key]
