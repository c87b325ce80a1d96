"""Ledger reconciliation inside mt5_commit_account_sync (issue 13), against real PostgreSQL.

balance = sum(profit + swap + commission + fee) over every deal but DEAL_TYPE_CREDIT; the
commit keeps the opening offset (balance - stored deals) and calls a drift a ledger gap.
The sample deals sum to 10,316.80 (see ``sample_deals``).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from mt5_sync.contracts import CommitPayload
from mt5_sync.store import PostgresStore

from . import (
    DEAL_TYPE_BALANCE,
    DEAL_TYPE_BUY_CANCELED,
    ENTRY_IN,
    LOGIN,
    SERVER,
    account_row,
    at,
    clone,
    commit_payload,
    deal,
)

DEALS_SUM = 10_316.80
FLOATING = 1.25 + 15.0  # the sample open positions' profit + swap
DEAL_TYPE_CREDIT = 3


@pytest.fixture
def store(db_url: str) -> PostgresStore:
    return PostgresStore(db_url)


@pytest.fixture
def account_id(store: PostgresStore) -> str:
    return store.register_account(
        user_id=str(uuid.uuid4()), login_number=LOGIN, broker_server=SERVER, broker_name=None,
        investor_password_encrypted="gAAAA-encrypted", server_time_rule="ny+7",
    )


def reconciled(
    account_id: str,
    *,
    balance: float,
    expected: float | None = 0.0,
    minutes: float = 60,
    extra_deals: list[Any] = (),  # type: ignore[assignment]
    floating: float = FLOATING,
) -> CommitPayload:
    """The sample payload with a consistent account (equity = balance + open P/L) and a
    ledger check; ``expected`` = 0: the window held the whole history."""
    payload = clone(commit_payload(account_id, completed=at(minutes), cursor=at(minutes - 5),
                                   with_quarantine=False))
    payload["sync_id"] = str(uuid.uuid4())
    payload["account"] = account_row(balance=balance, equity=round(balance + floating, 2))
    payload["deals"] = [*payload["deals"], *extra_deals]
    payload["ledger"] = {"expected_offset": expected}
    return payload


def ledger(store: PostgresStore, account_id: str) -> dict[str, Any]:
    [row] = store.fetch_all(
        "select * from mt5_ledger_reconciliation where account_id = %s", (account_id,))
    return row


def log_of(store: PostgresStore, sync_id: str) -> dict[str, Any]:
    [row] = store.fetch_all("select * from sync_logs where sync_id = %s", (sync_id,))
    return row


def cursor(store: PostgresStore, account_id: str) -> datetime:
    [row] = store.fetch_all(
        "select history_cursor from trading_accounts where id = %s", (account_id,))
    return row["history_cursor"]


def test_a_complete_ledger_from_the_first_deal_closes_at_offset_zero(store, account_id):
    result = store.commit_account_sync(reconciled(account_id, balance=DEALS_SUM))
    assert result["status"] == "success" and result["ledger"]["status"] == "ok"
    row = ledger(store, account_id)
    assert row["status"] == "ok" and row["opening_offset"] == 0 and row["drift"] == 0
    assert row["equity_drift"] == 0 and row["last_checked_at"] is not None


def test_a_missing_deal_is_a_gap_that_keeps_the_cursor_and_heals_when_read(store, account_id):
    first = reconciled(account_id, balance=DEALS_SUM, minutes=60)
    store.commit_account_sync(first)
    before = cursor(store, account_id)
    # The broker booked a 250.00 deposit the terminal did not show this time.
    late = deal(1010, position_id=0, minutes=70, type_=DEAL_TYPE_BALANCE, entry=ENTRY_IN,
                volume=0, price=0, profit=250.0, symbol="", comment="Deposit")
    second = reconciled(account_id, balance=DEALS_SUM + 250, minutes=90)
    result = store.commit_account_sync(second)

    assert result["status"] == "partial" and result["error_code"] == "ledger_gap"
    log = log_of(store, second["sync_id"])
    assert log["status"] == "partial" and log["error_code"] == "ledger_gap"
    assert "10566.8" in log["error_message"] and "offset 250.00" in log["error_message"]
    assert "expected 0" in log["error_message"]
    assert cursor(store, account_id) == before  # the window is read again
    row = ledger(store, account_id)
    assert (row["status"], row["drift"], row["opening_offset"]) == ("gap", 250, 0)
    assert row["gap_since"] is not None
    assert store.get_account(account_id).ledger_status == "gap"

    third = reconciled(account_id, balance=DEALS_SUM + 250, minutes=120, extra_deals=[late])
    result = store.commit_account_sync(third)
    assert result["status"] == "success"
    row = ledger(store, account_id)
    assert row["status"] == "ok" and row["drift"] == 0 and row["gap_since"] is None
    assert row["healed_at"] is not None and "drift 250" in row["heal_note"]
    assert cursor(store, account_id) == at(115)


def test_a_later_window_keeps_its_opening_offset_from_sync_to_sync(store, account_id):
    opening = 4_683.20  # the balance before the first synced window
    first = reconciled(account_id, balance=DEALS_SUM + opening, expected=None)
    assert store.commit_account_sync(first)["status"] == "success"
    row = ledger(store, account_id)
    assert row["status"] == "baseline" and row["opening_offset"] == Decimal("4683.2")
    fee = deal(1011, position_id=0, minutes=70, type_=9, entry=ENTRY_IN, volume=0, price=0,
               profit=-12.5, symbol="", comment="Monthly commission")
    second = reconciled(account_id, balance=DEALS_SUM + opening - 12.5, expected=None,
                        minutes=90, extra_deals=[fee])
    assert store.commit_account_sync(second)["status"] == "success"
    assert ledger(store, account_id)["status"] == "ok"
    # A deal the terminal never showed moves the offset: a gap against the kept baseline.
    third = reconciled(account_id, balance=DEALS_SUM + opening - 12.5 - 40, expected=None,
                       minutes=120, extra_deals=[fee])
    result = store.commit_account_sync(third)
    assert result["error_code"] == "ledger_gap"
    assert ledger(store, account_id)["drift"] == -40


def test_credit_does_not_move_the_balance(store, account_id):
    credit = deal(1012, position_id=0, minutes=50, type_=DEAL_TYPE_CREDIT, entry=ENTRY_IN,
                  volume=0, price=0, profit=500.0, symbol="", comment="Credit bonus")
    payload = reconciled(account_id, balance=DEALS_SUM, extra_deals=[credit])
    payload["account"]["credit"] = 500.0
    payload["account"]["equity"] = round(DEALS_SUM + 500 + FLOATING, 2)
    assert store.commit_account_sync(payload)["status"] == "success"
    assert ledger(store, account_id)["status"] == "ok"


def test_a_deal_cancelled_after_the_fact_is_a_gap_until_it_is_read_again(store, account_id):
    store.commit_account_sync(reconciled(account_id, balance=DEALS_SUM))
    # The broker cancels the 198.00 exit 1003: its money is zeroed and moved to a correction
    # deal, the balance stays. An incremental window sees the correction, not the old deal:
    # the stored ledger counts the money twice.
    correction = deal(1013, position_id=0, minutes=80, type_=5, entry=ENTRY_IN, volume=0,
                      price=0, profit=198.0, symbol="", comment="Correction of #1003")
    incremental = reconciled(account_id, balance=DEALS_SUM, minutes=90,
                             extra_deals=[correction])
    incremental["deals"] = [d for d in incremental["deals"] if d["ticket"] in (1013,)]
    result = store.commit_account_sync(incremental)
    assert result["error_code"] == "ledger_gap" and result["ledger"]["drift"] == -198
    # The whole history read again: the cancelled deal comes back with zero money.
    full = reconciled(account_id, balance=DEALS_SUM, minutes=120, extra_deals=[correction])
    for d in full["deals"]:
        if d["ticket"] == 1003:
            d.update(type=DEAL_TYPE_BUY_CANCELED, profit=0.0, commission=0.0, swap=0.0)
    assert store.commit_account_sync(full)["status"] == "success"
    row = ledger(store, account_id)
    assert row["status"] == "ok" and row["healed_at"] is not None


def test_equity_drift_is_reported_but_the_cursor_moves(store, account_id):
    payload = reconciled(account_id, balance=DEALS_SUM)
    payload["account"]["equity"] = DEALS_SUM + FLOATING + 3.0
    result = store.commit_account_sync(payload)
    assert result["status"] == "partial" and result["error_code"] == "equity_drift"
    row = ledger(store, account_id)
    assert row["status"] == "equity_drift" and row["equity_drift"] == 3
    assert cursor(store, account_id) == at(55)


def test_no_check_without_a_clean_history_read(store, account_id):
    payload = reconciled(account_id, balance=DEALS_SUM + 999)
    payload["ledger"] = None
    assert store.commit_account_sync(payload)["status"] == "success"
    assert ledger(store, account_id)["status"] == "unchecked"


def test_a_replayed_staged_commit_answers_with_its_ledger(store, account_id):
    payload = reconciled(account_id, balance=DEALS_SUM + 5)
    first = store.commit_account_sync(payload)
    assert first["error_code"] == "ledger_gap"
    staged = clone(payload)
    staged["staged"] = {"deals": {"chunks": 1, "rows": 1}}
    [answer] = store.fetch_all("select public.mt5_commit_staged_account_sync(%s::jsonb) as r",
                               (json.dumps(staged),))
    assert answer["r"]["status"] == "partial" and answer["r"]["ledger"]["drift"] == 5
    assert answer["r"]["error_code"] == "ledger_gap"
