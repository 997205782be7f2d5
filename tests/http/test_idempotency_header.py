"""Parsing the Idempotency-Key header (a Structured Field String) and holding keys in flight."""

from __future__ import annotations

import pytest

from http_api.idempotency import (
    IdempotencyHeaderError,
    InFlightKeys,
    KeyInFlightError,
    fingerprint,
    parse_key,
)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        (['"8e03978e-40d5-43e8-bc93-6894a57f9324"'], "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ([' "spaced" '], "spaced"),
        (['"with \\"quote\\" and \\\\"'], 'with "quote" and \\'),
        (["unquoted-token_1.2"], "unquoted-token_1.2"),
        (['"' + "k" * 200 + '"'], "k" * 200),
    ],
)
def test_a_well_formed_key_is_read(values: list[str], key: str) -> None:
    assert parse_key(values) == key


@pytest.mark.parametrize(
    "values",
    [
        [],
        ['"a"', '"b"'],
        ['""'],
        ['"   "'],
        ['"unterminated'],
        ['"a" , "b"'],
        ['"a";param=1'],
        ['"bad \\x escape"'],
        ['"tab\tinside"'],
        ["has space"],
        ['"' + "k" * 201 + '"'],
    ],
)
def test_a_missing_repeated_or_malformed_key_is_a_400(values: list[str]) -> None:
    with pytest.raises(IdempotencyHeaderError) as raised:
        parse_key(values)
    assert raised.value.problem.status == 400


def test_a_key_in_flight_refuses_a_repeat_with_409_and_another_request_with_422() -> None:
    keys = InFlightKeys(retry_after_s=1)
    digest = fingerprint("deposit", {"amount": 1})
    with keys.hold("k", digest):
        with pytest.raises(KeyInFlightError) as same:
            keys.hold("k", digest).__enter__()
        with pytest.raises(KeyInFlightError) as other:
            keys.hold("k", fingerprint("deposit", {"amount": 2})).__enter__()
        assert len(keys) == 1
    assert (same.value.problem.status, same.value.problem.retry_after_s) == (409, 1)
    assert other.value.problem.status == 422
    assert len(keys) == 0
    with keys.hold("k", digest):
        pass


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    assert fingerprint("t", {"a": 1, "b": 2}) == fingerprint("t", {"b": 2, "a": 1})
    assert fingerprint("t", {"a": 1}) != fingerprint("t", {"a": 2})
    assert fingerprint("t", {"a": 1}) != fingerprint("u", {"a": 1})
