"""What the trade server shows at ``now``: visible deals and orders, open positions, account.

Also the *truth API* for tests (``expected_trades``, ``expected_cash_flows``,
``visible_deals``, ``account_state``). It is computed here from the generated ledger alone,
never through the project's transform code, so a test comparing the database with it checks
the sync rather than the sync against itself.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mt5_sync.mt5sim import constants as c
from mt5_sync.mt5sim.ledger import (
    CORRECTION_TICKET_OFFSET,
    Ledger,
    PositionMeta,
    ledger_for,
    server_clock,
    ticket_base,
)
from mt5_sync.mt5sim.prices import price_path
from mt5_sync.mt5sim.structures import AccountInfo, TradeDeal, TradeOrder, TradePosition
from mt5_sync.mt5sim.world import AccountSpec

_TRADE_TYPES = (c.DEAL_TYPE_BUY, c.DEAL_TYPE_SELL)
_DAY_MS = 86_400_000


class VisibleDeal(NamedTuple):
    """A deal as the terminal shows it, with the true UTC instant it happened."""

    deal: TradeDeal
    time_utc: datetime


@dataclass(frozen=True)
class AccountState:
    """Everything the terminal would report for an account at one instant."""

    info: AccountInfo
    positions: tuple[TradePosition, ...]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


class BrokerView:
    """One account's ledger seen at one instant (cheap to build; the ledger is cached)."""

    def __init__(self, spec: AccountSpec, seed: int, start: datetime, now: datetime) -> None:
        self.spec = spec
        self.seed = seed
        self.now_ms = _ms(now)
        self.ledger: Ledger = ledger_for(spec, seed, start, now)
        self.n_visible = bisect_right(self.ledger.deal_utc_ms, self.now_ms)

    # ------------------------------------------------------------------ ledger views

    def deals(self) -> list[TradeDeal]:
        return [d for d, _ in self.deals_with_utc()]

    def deals_with_utc(self) -> list[tuple[TradeDeal, int]]:
        """Visible deals with their true UTC ms, in time order, after any cancellation."""
        n = self.n_visible
        rows = list(zip(self.ledger.deals[:n], self.ledger.deal_utc_ms[:n], strict=True))
        cancel = self.spec.quirks.cancelled
        if cancel is not None and self.now_ms >= _ms(cancel.at_utc):
            rows = self._cancelled(rows, _ms(cancel.at_utc))
        return rows

    def cancelled_position(self) -> PositionMeta | None:
        """The position the ``cancelled`` quirk cancels (None: no such position)."""
        cancel = self.spec.quirks.cancelled
        if cancel is None:
            return None
        before = _ms(cancel.at_utc) - int(cancel.older_than_hours * 3_600_000)
        deals = self.ledger.deals
        candidates = [
            m for m in self.ledger.positions
            if len(m.deal_index) == 2 and m.close_ms <= before
            and deals[m.deal_index[1]].entry == c.DEAL_ENTRY_OUT
        ]
        index = cancel.position_index
        return candidates[index] if index < len(candidates) else None

    def _cancelled(
        self, rows: list[tuple[TradeDeal, int]], at_ms: int
    ) -> list[tuple[TradeDeal, int]]:
        """Both deals of the cancelled position become *_CANCELED with zero money; a
        correction deal at ``at_ms`` carries the money, so the balance does not change."""
        meta = self.cancelled_position()
        if meta is None:
            return rows
        money = 0.0
        out: list[tuple[TradeDeal, int]] = []
        for deal, utc in rows:
            if deal.position_id == meta.position_id and deal.type in _TRADE_TYPES:
                money += deal.profit + deal.swap + deal.commission + deal.fee
                deal = deal._replace(
                    type=c.DEAL_TYPE_BUY_CANCELED if deal.type == c.DEAL_TYPE_BUY
                    else c.DEAL_TYPE_SELL_CANCELED,
                    profit=0.0, swap=0.0, commission=0.0, fee=0.0,
                )
            out.append((deal, utc))
        server_ms = server_clock(self.spec.time_rule).to_server_ms(at_ms)
        correction = TradeDeal(
            ticket_base(self.spec.login) + CORRECTION_TICKET_OFFSET + 1, 0, server_ms // 1000,
            server_ms, c.DEAL_TYPE_CORRECTION, c.DEAL_ENTRY_IN, 0, 0, c.DEAL_REASON_CLIENT,
            0.0, 0.0, 0.0, 0.0, round(money, 2) + 0.0, 0.0, "",
            f"Correction: position #{meta.position_id} cancelled", "",
        )
        index = bisect_right([u for _, u in out], at_ms)
        out.insert(index, (correction, at_ms))
        return out

    def orders(self) -> list[TradeOrder]:
        rows, utc_ms = self.ledger.orders()
        return rows[: bisect_right(utc_ms, self.now_ms)]

    def started_positions(self) -> list[PositionMeta]:
        """Positions whose opening deal is visible."""
        return self.ledger.positions[: bisect_right(self.ledger.position_open_ms, self.now_ms)]

    # ------------------------------------------------------------------ live state

    def positions(self) -> list[TradePosition]:
        rows = []
        for meta in self.started_positions():
            if meta.close_ms > self.now_ms:
                rows.append(self._position(meta))
        return rows

    def _position(self, meta: PositionMeta) -> TradePosition:
        """Replay the position's visible deals: direction, volume, entry price, last update."""
        deals = self.ledger.deals
        utc = self.ledger.deal_utc_ms
        signed = 0
        avg = 0.0
        since_ms = utc[meta.deal_index[0]]
        first = last = deals[meta.deal_index[0]]
        ticket = meta.position_id
        for i in meta.deal_index:
            if utc[i] > self.now_ms:
                break
            d = deals[i]
            last = d
            units = round(d.volume * 100)
            step = units if d.type == c.DEAL_TYPE_BUY else -units
            if d.entry == c.DEAL_ENTRY_IN:
                avg = (avg * abs(signed) + d.price * units) / (abs(signed) + units)
            elif d.entry == c.DEAL_ENTRY_INOUT:
                avg, since_ms = d.price, utc[i]
                if self.spec.quirks.reversal_ticket:
                    ticket = d.order  # POSITION_TICKET changes, POSITION_IDENTIFIER stays
            signed += step
        direction = 1 if signed > 0 else -1
        lots = round(abs(signed) / 100.0, 2)
        path = price_path(self.seed, meta.symbol)
        bid, ask = path.quote(self.now_ms / 1000.0)
        current = bid if direction > 0 else ask
        price_open = round(avg, path.spec.digits)
        profit = path.to_account(direction * (current - price_open), lots, current)
        rate = path.spec.swap_long if direction > 0 else path.spec.swap_short
        swap = rate * lots * (self.now_ms // _DAY_MS - since_ms // _DAY_MS)
        return TradePosition(
            ticket,
            first.time,
            first.time_msc,
            last.time,
            last.time_msc,
            c.POSITION_TYPE_BUY if direction > 0 else c.POSITION_TYPE_SELL,
            meta.magic,
            meta.position_id,
            meta.reason,
            lots,
            price_open,
            meta.sl,
            meta.tp,
            current,
            round(swap, 2) + 0.0,
            round(profit, 2) + 0.0,
            meta.symbol,
            meta.comment,
            "",
        )

    def account_info(self, positions: list[TradePosition] | None = None) -> AccountInfo:
        spec = self.spec
        if positions is None:
            positions = self.positions()
        n = self.n_visible
        balance = round(self.ledger.money_cum[n - 1], 2) + 0.0 if n else 0.0
        credit = round(self.ledger.credit_cum[n - 1], 2) + 0.0 if n else 0.0
        floating = round(math.fsum(p.profit + p.swap for p in positions), 2) + 0.0
        margin = (
            round(
                math.fsum(
                    price_path(self.seed, p.symbol).margin(p.volume, p.price_current, spec.leverage)
                    for p in positions
                ),
                2,
            )
            + 0.0
        )
        equity = round(balance + credit + floating, 2) + 0.0
        return AccountInfo(
            login=spec.login,
            trade_mode=c.ACCOUNT_TRADE_MODE_DEMO
            if "demo" in spec.server.lower()
            else c.ACCOUNT_TRADE_MODE_REAL,
            leverage=spec.leverage,
            limit_orders=200,
            margin_so_mode=c.ACCOUNT_STOPOUT_MODE_PERCENT,
            trade_allowed=False,  # investor (read-only) connection
            trade_expert=True,
            margin_mode=c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
            if spec.margin_mode == "hedging"
            else c.ACCOUNT_MARGIN_MODE_RETAIL_NETTING,
            currency_digits=2,
            fifo_close=False,
            balance=balance,
            credit=credit,
            profit=floating,
            equity=equity,
            margin=margin,
            margin_free=round(equity - margin, 2) + 0.0,
            margin_level=round(equity / margin * 100.0, 2) if margin > 0 else 0.0,
            margin_so_call=50.0,
            margin_so_so=30.0,
            margin_initial=0.0,
            margin_maintenance=0.0,
            assets=0.0,
            liabilities=0.0,
            commission_blocked=0.0,
            name=spec.name,
            server=spec.server,
            currency=spec.currency,
            company=spec.company,
        )

    def server_now(self) -> int:
        """``now`` on the account's server wall clock (epoch seconds)."""
        return server_clock(self.spec.time_rule).to_server_ms(self.now_ms) // 1000


# ---------------------------------------------------------------------- truth API


def visible_deals(
    account_spec: AccountSpec, seed: int, timeline_start_utc: datetime, now_utc: datetime
) -> list[VisibleDeal]:
    """Every deal visible at ``now_utc`` in true-time order, with its true UTC time."""
    view = BrokerView(account_spec, seed, timeline_start_utc, now_utc)
    return [VisibleDeal(d, _utc(ms)) for d, ms in view.deals_with_utc()]


def expected_trades(
    account_spec: AccountSpec, seed: int, timeline_start_utc: datetime, now_utc: datetime
) -> list[dict[str, Any]]:
    """Per position visible at ``now_utc``: what a correct sync must have stored.

    ``volume`` is the total volume opened (IN deals plus the part of an INOUT deal that opens
    the new direction); ``net_profit`` sums profit+swap+commission+fee over the visible deals
    (realised so far, for open positions too). A position is closed once its running signed
    volume returns to zero after an exit.
    """
    trades: dict[int, dict[str, Any]] = {}
    running: dict[int, int] = {}
    for deal, when in visible_deals(account_spec, seed, timeline_start_utc, now_utc):
        if deal.type not in _TRADE_TYPES or deal.position_id == 0:
            continue
        pid = deal.position_id
        units = round(deal.volume * 100)
        before = running.get(pid, 0)
        after = before + (units if deal.type == c.DEAL_TYPE_BUY else -units)
        running[pid] = after
        row = trades.get(pid)
        if row is None:
            row = trades[pid] = {
                "ticket": pid,
                "status": "open",
                "symbol": deal.symbol,
                "side": "buy" if deal.type == c.DEAL_TYPE_BUY else "sell",
                "volume": 0.0,
                "net_profit": 0.0,
                "profit": 0.0,
                "swap": 0.0,
                "commission": 0.0,
                "fee": 0.0,
                "open_price": deal.price,
                "open_time_utc": when,
                "open_time_server": deal.time,
                "close_time_utc": None,
                "close_time_server": None,
                "close_price": None,
                "deal_count": 0,
            }
        row["deal_count"] += 1
        for key in ("profit", "swap", "commission", "fee"):
            row[key] += getattr(deal, key)
        row["net_profit"] += deal.profit + deal.swap + deal.commission + deal.fee
        if deal.entry == c.DEAL_ENTRY_IN:
            row["volume"] += units / 100.0
        elif deal.entry == c.DEAL_ENTRY_INOUT:
            row["volume"] += (units - abs(before)) / 100.0
        if deal.entry != c.DEAL_ENTRY_IN:
            row["close_time_utc"], row["close_time_server"] = when, deal.time
            row["close_price"] = deal.price
            row["status"] = "closed" if after == 0 else "open"
    for row in trades.values():
        for key in ("volume", "net_profit", "profit", "swap", "commission", "fee"):
            row[key] = round(row[key], 2) + 0.0
        if row["status"] == "open":
            row["close_time_utc"] = row["close_time_server"] = row["close_price"] = None
    return list(trades.values())


def expected_cash_flows(
    account_spec: AccountSpec, seed: int, timeline_start_utc: datetime, now_utc: datetime
) -> list[dict[str, Any]]:
    """Visible balance operations (deal types other than BUY/SELL), amount = ``profit``."""
    return [
        {
            "ticket": d.ticket,
            "type": d.type,
            "amount": d.profit,
            "time_utc": when,
            "time_server": d.time,
            "comment": d.comment,
        }
        for d, when in visible_deals(account_spec, seed, timeline_start_utc, now_utc)
        if d.type not in _TRADE_TYPES
    ]


def account_state(
    account_spec: AccountSpec, seed: int, timeline_start_utc: datetime, now_utc: datetime
) -> AccountState:
    """``account_info()`` and ``positions_get()`` as the terminal reports them at ``now_utc``."""
    view = BrokerView(account_spec, seed, timeline_start_utc, now_utc)
    positions = view.positions()
    return AccountState(view.account_info(positions), tuple(positions))
