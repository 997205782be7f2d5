"""WAL positions as integers, and multi-host writer DSNs as the asyncpg dialect takes them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.sqlalchemy.targets import asyncpg_url
from adapters.sqlalchemy.wal import format_lsn, parse_lsn
from ports.connection_provider import CausalToken


@given(position=st.integers(0, 2**64 - 1))
def test_a_position_survives_the_round_trip_through_postgresqls_notation(position: int) -> None:
    assert parse_lsn(format_lsn(position)) == position


def test_positions_parse_as_postgresql_prints_them_and_tokens_order_by_position() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn("0/0") == 0
    assert CausalToken(parse_lsn("1/0")) > CausalToken(parse_lsn("0/FFFFFFFF"))
    assert max(CausalToken(3), CausalToken(9), CausalToken(5)) == CausalToken(9)


def test_a_multi_host_dsn_becomes_the_dialects_host_list_with_default_ports() -> None:
    url = asyncpg_url("postgresql://app:p%40ss@db1:5433,db2/ledger?sslmode=require")

    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.database, url.host) == ("app", "p@ss", "ledger", None)
    assert url.query == {"sslmode": "require", "host": ("db1:5433", "db2:5432")}


def test_a_single_host_dsn_is_left_as_it_was_apart_from_the_driver() -> None:
    url = asyncpg_url("postgres://app@db1:6432/ledger")
    assert (url.drivername, url.host, url.port, url.query) == ("postgresql+asyncpg", "db1", 6432, {})


def test_a_multi_host_dsn_without_user_info_is_taken_too() -> None:
    url = asyncpg_url("postgresql://db1,db2:5433/ledger")
    assert (url.username, url.database, url.host) == (None, "ledger", None)
    assert url.query == {"host": ("db1:5432", "db2:5433")}
