"""Tests of mt5_sync.transform; shared builders of realistic raw MT5 records.

Field names and order are exactly those of the MetaTrader5 5.0.6231 structures
(reference/metatrader5-5.0.6231.json): TradeDeal, TradePosition, AccountInfo.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from mt5_sync.contracts import FetchResult, PartError

JAN = int(datetime(2026, 1, 15, 15, 0, tzinfo=UTC).timestamp())  # server wall clock as epoch
JUL = int(datetime(2026, 7, 1, 15, 0, tzinfo=UTC).timestamp())

BUY, SELL = 0, 1
IN, OUT, INOUT, OUT_BY = 0, 1, 2, 3


def deal(
    ticket: int,
    *,
    type: int = BUY,
    entry: int = IN,
    position_id: int | None = None,
    volume: float = 1.0,
    price: float = 1.1000,
    time: int = JUL,
    msc: int = 0,
    profit: float = 0.0,
    commission: float = 0.0,
    swap: float = 0.0,
    fee: float = 0.0,
    symbol: str = "EURUSD",
    magic: int = 0,
    comment: str = "",
    order: int | None = None,
) -> dict[str, Any]:
    """A raw TradeDeal ``_asdict()``; ``time`` is server epoch seconds, ``msc`` extra millis."""
    return {
        "ticket": ticket,
        "order": ticket + 1000 if order is None else order,
        "time": time,
        "time_msc": time * 1000 + msc,
        "type": type,
        "entry": entry,
        "magic": magic,
        "position_id": (ticket if position_id is None else position_id)
        if type in (0, 1, 13, 14)
        else 0,
        "reason": 0,
        "volume": volume,
        "price": price,
        "commission": commission,
        "swap": swap,
        "profit": profit,
        "fee": fee,
        "symbol": symbol,
        "comment": comment,
        "external_id": "",
    }


def cash(ticket: int, type: int, amount: float, *, time: int = JUL, comment: str = "") -> dict:
    """A raw non-trade deal (balance, credit, commission, dividend, ...)."""
    return deal(
        ticket, type=type, entry=IN, volume=0.0, price=0.0, time=time, profit=amount,
        symbol="", comment=comment,
    )  # fmt: skip


def position(
    identifier: int,
    *,
    type: int = BUY,
    volume: float = 1.0,
    price_open: float = 1.1000,
    price_current: float = 1.1050,
    time: int = JUL,
    sl: float = 0.0,
    tp: float = 0.0,
    profit: float = 50.0,
    swap: float = -1.5,
    symbol: str = "EURUSD",
    magic: int = 7,
    comment: str = "open",
) -> dict[str, Any]:
    """A raw TradePosition ``_asdict()``."""
    return {
        "ticket": identifier,
        "time": time,
        "time_msc": time * 1000 + 250,
        "time_update": time + 60,
        "time_update_msc": (time + 60) * 1000,
        "type": type,
        "magic": magic,
        "identifier": identifier,
        "reason": 0,
        "volume": volume,
        "price_open": price_open,
        "sl": sl,
        "tp": tp,
        "price_current": price_current,
        "swap": swap,
        "profit": profit,
        "symbol": symbol,
        "comment": comment,
        "external_id": "",
    }


def account_info(login: int = 5001234, **overrides: Any) -> dict[str, Any]:
    """A raw AccountInfo ``_asdict()`` (hedging account)."""
    info: dict[str, Any] = {
        "login": login,
        "trade_mode": 0,
        "leverage": 100,
        "limit_orders": 200,
        "margin_so_mode": 0,
        "trade_allowed": True,
        "trade_expert": True,
        "margin_mode": 2,
        "currency_digits": 2,
        "fifo_close": False,
        "balance": 10_000.0,
        "credit": 0.0,
        "profit": 48.5,
        "equity": 10_048.5,
        "margin": 1_100.0,
        "margin_free": 8_948.5,
        "margin_level": 913.5,
        "margin_so_call": 50.0,
        "margin_so_so": 30.0,
        "margin_initial": 0.0,
        "margin_maintenance": 0.0,
        "assets": 0.0,
        "liabilities": 0.0,
        "commission_blocked": 0.0,
        "name": "Demo Trader",
        "server": "Broker-Demo",
        "currency": "USD",
        "company": "Broker Ltd",
    }
    info.update(overrides)
    return info


def fetch_result(
    *,
    account: dict[str, Any] | None = None,
    positions: list[dict[str, Any]] | None = None,
    deals: list[dict[str, Any]] | None = None,
    errors: list[PartError] | None = None,
    login: int = 5001234,
) -> FetchResult:
    return FetchResult(
        account_id="acc-1",
        login=login,
        server="Broker-Demo",
        fetched_at_utc="2026-07-01T12:30:00+00:00",
        account_info=account,
        positions=positions,
        deals=deals,
        errors=errors or [],
        terminal_ms=120,
    )


def backfill(n_deals: int, *, seed: int = 7, start: int = JAN) -> list[dict[str, Any]]:
    """``n_deals`` realistic deals: closed positions (IN + 1..3 partial OUTs), every 50th
    deal a cash flow; one deal per ~37 s of server time."""
    rng = random.Random(seed)
    deals: list[dict[str, Any]] = []
    ticket = 1_000_000
    t = start
    while len(deals) < n_deals:
        pid = ticket
        side = rng.choice((BUY, SELL))
        lots = rng.choice((0.1, 0.5, 1.0, 2.0))
        price = 1.05 + rng.random() / 10
        deals.append(deal(ticket, type=side, entry=IN, position_id=pid, volume=lots,
                          price=price, time=t, msc=rng.randrange(1000), commission=-3.5,
                          magic=42, comment="bot"))  # fmt: skip
        ticket += 1
        parts = rng.choice((1, 1, 2, 3))
        remaining = lots
        for i in range(parts):
            t += 37
            vol = remaining if i == parts - 1 else round(lots / parts, 2)
            remaining = round(remaining - vol, 2)
            deals.append(deal(ticket, type=1 - side, entry=OUT, position_id=pid, volume=vol,
                              price=price + rng.uniform(-0.01, 0.01), time=t,
                              profit=rng.uniform(-100, 100), swap=-0.2,
                              commission=-1.0))  # fmt: skip
            ticket += 1
        if len(deals) % 50 < 4:
            t += 37
            deals.append(cash(ticket, 2, 100.0, time=t, comment="deposit"))
            ticket += 1
        t += 37
    return deals[:n_deals]
