"""Store tests: real PostgreSQL, hand-built payloads.

The builders below make small, realistic :class:`~mt5_sync.contracts.CommitPayload` values:
a hedging account with a deposit, a EURUSD buy closed in two partial closes, a gold buy that is
partially closed and still open, an open GBPUSD sell, a snapshot and one quarantined deal.
Test modules import them relatively (``from . import ...``) so they work whether or not
``tests/`` becomes a package.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from mt5_sync.contracts import (
    AccountRow,
    CashFlowRow,
    CommitPayload,
    DealRow,
    FailurePayload,
    QuarantineRow,
    SnapshotRow,
    TradeRow,
)

LOGIN = 5_012_345
SERVER = "Demo-Server"
BASE = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SERVER_OFFSET_S = 2 * 3600  # "ny+7" in the northern winter: server wall clock = UTC + 2h

# MT5 constants (reference/metatrader5-5.0.6231.json)
DEAL_TYPE_BUY, DEAL_TYPE_SELL, DEAL_TYPE_BALANCE, DEAL_TYPE_BUY_CANCELED = 0, 1, 2, 13
ENTRY_IN, ENTRY_OUT = 0, 1


def iso(moment: datetime) -> str:
    return moment.isoformat()


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def server_epoch(moment: datetime) -> int:
    return int(moment.timestamp()) + SERVER_OFFSET_S


def deal(
    ticket: int,
    *,
    position_id: int,
    minutes: float,
    type_: int,
    entry: int,
    volume: float,
    price: float,
    profit: float = 0.0,
    commission: float = 0.0,
    swap: float = 0.0,
    symbol: str = "EURUSD",
    comment: str = "",
) -> DealRow:
    moment = at(minutes)
    return {
        "ticket": ticket,
        "order_ticket": ticket + 50_000 if type_ in (0, 1, 13, 14) else 0,
        "position_id": position_id,
        "time_utc": iso(moment),
        "time_server": server_epoch(moment),
        "time_msc_server": server_epoch(moment) * 1000 + 123,
        "type": type_,
        "entry": entry,
        "magic": 0,
        "reason": 0,
        "volume": volume,
        "price": price,
        "commission": commission,
        "swap": swap,
        "profit": profit,
        "fee": 0.0,
        "symbol": symbol,
        "comment": comment,
        "external_id": "",
    }


def trade(
    ticket: int,
    *,
    symbol: str,
    side: str,
    status: str,
    volume: float,
    open_price: float,
    open_minutes: float,
    close_price: float | None = None,
    close_minutes: float | None = None,
    current_price: float | None = None,
    profit: float = 0.0,
    swap: float = 0.0,
    commission: float = 0.0,
    deal_count: int = 1,
) -> TradeRow:
    opened = at(open_minutes)
    closed = at(close_minutes) if close_minutes is not None else None
    return {
        "ticket": ticket,
        "symbol": symbol,
        "side": side,
        "status": status,
        "volume": volume,
        "open_price": open_price,
        "open_time_utc": iso(opened),
        "open_time_server": server_epoch(opened),
        "close_price": close_price,
        "close_time_utc": iso(closed) if closed else None,
        "close_time_server": server_epoch(closed) if closed else None,
        "stop_loss": None,
        "take_profit": None,
        "current_price": current_price,
        "profit": profit,
        "swap": swap,
        "commission": commission,
        "fee": 0.0,
        "net_profit": round(profit + swap + commission, 2),
        "magic": 0,
        "comment": "",
        "deal_count": deal_count,
    }


def account_row(balance: float = 10_312.3, equity: float = 10_350.0) -> AccountRow:
    return {
        "login": LOGIN,
        "server": SERVER,
        "name": "Demo Trader",
        "company": "Demo Broker Ltd",
        "currency": "USD",
        "leverage": 500,
        "margin_mode": "hedging",
        "balance": balance,
        "credit": 0.0,
        "profit": equity - balance,
        "equity": equity,
        "margin": 150.25,
        "free_margin": equity - 150.25,
        "margin_level": equity / 150.25 * 100,
    }


def sample_deals() -> list[DealRow]:
    return [
        deal(1001, position_id=0, minutes=0, type_=DEAL_TYPE_BALANCE, entry=ENTRY_IN,
             volume=0, price=0, profit=10_000.0, symbol="", comment="Deposit"),
        deal(1002, position_id=2001, minutes=5, type_=DEAL_TYPE_BUY, entry=ENTRY_IN,
             volume=1.0, price=1.1, commission=-3.5),
        deal(1003, position_id=2001, minutes=20, type_=DEAL_TYPE_SELL, entry=ENTRY_OUT,
             volume=0.4, price=1.105, profit=200.0, commission=-1.4, swap=-0.6),
        deal(1004, position_id=2001, minutes=30, type_=DEAL_TYPE_SELL, entry=ENTRY_OUT,
             volume=0.6, price=1.102, profit=120.0, commission=-2.1, swap=-0.6),
        deal(1005, position_id=2002, minutes=35, type_=DEAL_TYPE_BUY, entry=ENTRY_IN,
             volume=0.1, price=2400.0, symbol="XAUUSD"),
        deal(1006, position_id=2002, minutes=40, type_=DEAL_TYPE_SELL, entry=ENTRY_OUT,
             volume=0.05, price=2401.0, profit=5.0, symbol="XAUUSD"),
    ]


def closed_2001() -> TradeRow:
    return trade(2001, symbol="EURUSD", side="buy", status="closed", volume=1.0, open_price=1.1,
                 open_minutes=5, close_price=1.1032, close_minutes=30, profit=320.0,
                 swap=-1.2, commission=-7.0, deal_count=3)


def open_positions() -> list[TradeRow]:
    return [
        trade(2002, symbol="XAUUSD", side="buy", status="open", volume=0.1, open_price=2400.0,
              open_minutes=35, current_price=2402.5, profit=1.25, deal_count=2),
        trade(2003, symbol="GBPUSD", side="sell", status="open", volume=0.3, open_price=1.27,
              open_minutes=45, current_price=1.2695, profit=15.0),
    ]


def commit_payload(
    account_id: str,
    *,
    sync_id: str | None = None,
    completed: datetime | None = None,
    cursor: datetime | None = None,
    status: str = "success",
    error_message: str | None = None,
    lease_holder: str | None = None,
    with_quarantine: bool = True,
) -> CommitPayload:
    """A full successful payload; callers mutate copies for the variant they test."""
    completed = completed or at(60)
    started = completed - timedelta(seconds=3)
    cash: CashFlowRow = {
        "deal_ticket": 1001,
        "type": DEAL_TYPE_BALANCE,
        "kind": "balance",
        "amount": 10_000.0,
        "time_utc": iso(at(0)),
        "time_server": server_epoch(at(0)),
        "comment": "Deposit",
    }
    snapshot: SnapshotRow = {
        "taken_at": iso(completed),
        "balance": 10_312.3,
        "equity": 10_350.0,
        "margin": 150.25,
        "free_margin": 10_199.75,
        "margin_level": 6888.51913477537,
    }
    quarantine: list[QuarantineRow] = []
    if with_quarantine:
        bad = dict(deal(1099, position_id=2099, minutes=50, type_=DEAL_TYPE_BUY,
                        entry=ENTRY_IN, volume=0.1, price=-1.0))
        quarantine.append({"kind": "deal", "ticket": 1099, "reasons": "price must be > 0",
                           "record": bad})
    return {
        "sync_id": sync_id or str(uuid.uuid4()),
        "account_id": account_id,
        "execution_id": str(uuid.uuid4()),
        "flow_run_id": str(uuid.uuid4()),
        "trigger": "scheduled",
        "sync_type": "incremental",
        "status": status,
        "error_message": error_message,
        "error_code": "positions_failed" if status == "partial" else None,
        "started_at": iso(started),
        "completed_at": iso(completed),
        "duration_ms": 3000,
        "account": account_row(),
        "snapshot": snapshot,
        "open_positions": open_positions(),
        "closed_trades": [closed_2001()],
        "deals": sample_deals(),
        "cash_flows": [cash],
        "quarantine": quarantine,
        "history_cursor": iso(cursor if cursor is not None else at(55)),
        "lease_holder": lease_holder,
    }


def failure_payload(
    account_id: str,
    *,
    sync_id: str | None = None,
    completed: datetime | None = None,
    message: str = "Failed to fetch account info: Connection timeout",
    lease_holder: str | None = None,
) -> FailurePayload:
    completed = completed or at(70)
    return {
        "sync_id": sync_id or str(uuid.uuid4()),
        "account_id": account_id,
        "execution_id": str(uuid.uuid4()),
        "flow_run_id": None,
        "trigger": "scheduled",
        "sync_type": "incremental",
        "error_code": "terminal_timeout",
        "error_message": message,
        "started_at": iso(completed - timedelta(seconds=30)),
        "completed_at": iso(completed),
        "duration_ms": 30_000,
        "lease_holder": lease_holder,
    }


def clone(payload: Any) -> Any:
    return copy.deepcopy(payload)


# Every table the sync writes, with its key order, for full dumps.
TABLES: dict[str, str] = {
    "trading_accounts": "id",
    "trades": "account_id, ticket",
    "deals": "account_id, ticket",
    "cash_flows": "account_id, deal_ticket",
    "account_snapshots": "account_id, taken_at",
    "sync_logs": "sync_id",
    "sync_quarantine": "sync_id, kind, ordinal",
}
