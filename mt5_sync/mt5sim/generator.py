"""Expands one account's trading into raw deals, deterministically from (seed, account spec).

Trades arrive as a Poisson process from the timeline start; each arrival is expanded at once
into all its future deals (partial closes, close-by, netting adds and reversals) with one
seeded RNG stream consumed in arrival order, so whatever was generated up to a horizon never
depends on where generation stopped. Cash flows use a second stream. Tickets are handed out
later, by ``ledger.py``, in true-time order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mt5_sync.mt5sim import constants as c
from mt5_sync.mt5sim.prices import PricePath, price_path
from mt5_sync.mt5sim.world import TIMELINE_DAYS, AccountSpec

_DAY_MS = 86_400_000
_MIN_HOLD_S = 10 * 60.0
_MAX_HOLD_S = 10 * 86_400.0
_CASH_EVERY_S = 5 * 86_400.0
_VOLUMES = (1, 2, 5, 10, 10, 20, 30, 50, 100)  # hundredths of a lot
NO_ORDER = -1  # RawDeal.order of balance operations
OWN_ORDER = -2  # RawDeal.order of a deal filled by its own market order


@dataclass(slots=True)
class RawDeal:
    """A deal before ticketing: local position/order keys instead of tickets."""

    utc_ms: int
    seq: int
    pos: int  # local position key, -1 for cash flows
    order: int  # index into Generator.orders, or NO_ORDER / OWN_ORDER
    type: int
    entry: int
    volume: float
    price: float
    commission: float
    swap: float
    profit: float
    fee: float
    symbol: str
    comment: str
    reason: int
    magic: int


@dataclass(slots=True)
class RawOrder:
    """A close-by order before ticketing (it names two positions and fills two deals).

    Every other trade deal is filled by a market order of its own (``OWN_ORDER``), which
    needs no record: ``ledger.py`` derives it from the deal and its position.
    """

    type: int
    pos: int
    pos_by: int


@dataclass(slots=True)
class PositionMeta:
    """Static facts of one position; its deals are found through ``deal_index``."""

    key: int
    symbol: str
    magic: int
    reason: int
    comment: str
    sl: float
    tp: float
    open_ms: int
    close_ms: int
    position_id: int = 0
    deal_index: list[int] = field(default_factory=list)


def _lots(units: int) -> float:
    return round(units / 100.0, 2)


def _money(value: float) -> float:
    return round(value, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


class Generator:
    """Expands arrivals into raw deals; one instance per ledger build."""

    def __init__(self, spec: AccountSpec, seed: int, start_ms: int, horizon_ms: int) -> None:
        self.spec = spec
        self.seed = seed
        self.start_ms = start_ms
        self.horizon_ms = horizon_ms
        self.end_ms = start_ms + TIMELINE_DAYS * _DAY_MS
        self.rng = random.Random(f"ledger:{seed}:{spec.server}:{spec.login}")
        self.deals: list[RawDeal] = []
        self.orders: list[RawOrder] = []
        self.positions: list[PositionMeta] = []
        self.hedging = spec.margin_mode == "hedging"
        self.commission_per_lot = self.rng.choice((0.0, 2.5, 3.5, 3.5))
        self.busy_until: dict[str, int] = {}
        self.paths = {symbol: price_path(seed, symbol) for symbol in spec.symbols}

    # ------------------------------------------------------------------ primitives

    def _path(self, symbol: str) -> PricePath:
        return self.paths[symbol]

    def _hold_s(self) -> float:
        return math.exp(self.rng.uniform(math.log(_MIN_HOLD_S), math.log(_MAX_HOLD_S)))

    def _fill(self, symbol: str, t_ms: int, buy: bool) -> float:
        return self.paths[symbol].fill(t_ms / 1000.0, buy)

    def _swap(self, symbol: str, direction: int, lots: float, from_ms: int, to_ms: int) -> float:
        nights = to_ms // _DAY_MS - from_ms // _DAY_MS
        spec = self._path(symbol).spec
        rate = spec.swap_long if direction > 0 else spec.swap_short
        return _money(rate * lots * nights)

    def _deal(
        self,
        meta: PositionMeta,
        t_ms: int,
        buy: bool,
        entry: int,
        lots: float,
        price: float,
        profit: float = 0.0,
        swap: float = 0.0,
        order: int = OWN_ORDER,
        reason: int | None = None,
        comment: str = "",
    ) -> None:
        commission = 0.0 if entry == c.DEAL_ENTRY_OUT_BY else -self.commission_per_lot * lots
        fee = -0.1 if entry == c.DEAL_ENTRY_IN and self.rng.random() < 0.03 else 0.0
        self.deals.append(
            RawDeal(
                t_ms,
                len(self.deals),
                meta.key,
                order,
                c.DEAL_TYPE_BUY if buy else c.DEAL_TYPE_SELL,
                entry,
                lots,
                price,
                round(commission, 2) + 0.0,
                swap,
                round(profit, 2) + 0.0,
                fee,
                meta.symbol,
                comment,
                meta.reason if reason is None else reason,
                meta.magic,
            )
        )
        if t_ms > meta.close_ms:
            meta.close_ms = t_ms

    def _open(
        self, symbol: str, t_ms: int, direction: int, units: int
    ) -> tuple[PositionMeta, float]:
        """A new position with its opening IN deal; returns it and the fill price."""
        rng = self.rng
        u = rng.random()  # reason: client 50%, expert 30%, mobile 15%, web 5%
        reason = 0 if u < 0.5 else 3 if u < 0.8 else 1 if u < 0.95 else 2
        magic = rng.choice((1001, 777, 20240501)) if reason == c.DEAL_REASON_EXPERT else 0
        digits = self.paths[symbol].spec.digits
        price = self._fill(symbol, t_ms, direction > 0)
        dist = price * rng.uniform(0.002, 0.01)
        sl = round(price - direction * dist, digits) if rng.random() < 0.4 else 0.0
        tp = round(price + direction * dist, digits) if rng.random() < 0.4 else 0.0
        comment = f"EA {magic}" if magic else ""
        meta = PositionMeta(len(self.positions), symbol, magic, reason, comment, sl, tp, t_ms, t_ms)
        self.positions.append(meta)
        self._deal(meta, t_ms, direction > 0, c.DEAL_ENTRY_IN, _lots(units), price)
        return meta, price

    def _split(self, units: int, parts: int) -> list[int]:
        cuts = sorted(self.rng.sample(range(1, units), parts - 1))
        return [b - a for a, b in zip([0, *cuts], [*cuts, units], strict=True)]

    def _exit_reason(self, meta: PositionMeta, profit: float) -> int:
        if meta.tp and profit > 0 and self.rng.random() < 0.5:
            return c.DEAL_REASON_TP
        if meta.sl and profit < 0 and self.rng.random() < 0.5:
            return c.DEAL_REASON_SL
        return meta.reason

    def _close(
        self,
        meta: PositionMeta,
        t_ms: int,
        direction: int,
        units: int,
        avg: float,
        open_ms: int,
        entry: int = c.DEAL_ENTRY_OUT,
    ) -> None:
        """An exit deal closing ``units`` of a position held since ``open_ms`` at ``avg``."""
        lots = _lots(units)
        path = self._path(meta.symbol)
        price = self._fill(meta.symbol, t_ms, direction < 0)
        profit = path.to_account(direction * (price - avg), lots, price)
        swap = self._swap(meta.symbol, direction, lots, open_ms, t_ms)
        reason = self._exit_reason(meta, profit)
        label = {c.DEAL_REASON_SL: "sl", c.DEAL_REASON_TP: "tp"}.get(reason)
        comment = f"[{label} {price}]" if label else ""
        self._deal(
            meta,
            t_ms,
            direction < 0,
            entry,
            lots,
            price,
            profit,
            swap,
            reason=reason,
            comment=comment,
        )

    # ------------------------------------------------------------------ trade shapes

    def _hedging_trade(self, symbol: str, t_ms: int, direction: int, units: int) -> None:
        rng = self.rng
        if rng.random() < 0.08:
            self._close_by_pair(symbol, t_ms, direction, units)
            return
        meta, price = self._open(symbol, t_ms, direction, units)
        hold_ms = int(self._hold_s() * 1000)
        parts = rng.choice((2, 3)) if rng.random() < 0.25 and units >= 3 else 1
        chunks = self._split(units, parts) if parts > 1 else [units]
        for i, chunk in enumerate(chunks, start=1):
            exit_ms = t_ms + hold_ms * i // parts
            self._close(meta, exit_ms, direction, chunk, price, t_ms)

    def _close_by_pair(self, symbol: str, t_ms: int, direction: int, units: int) -> None:
        """Two opposite positions, later closed against each other (OUT_BY deals)."""
        rng = self.rng
        hold_ms = int(self._hold_s() * 1000)
        by_ms = t_ms + int(hold_ms * rng.uniform(0.1, 0.6))
        close_ms = t_ms + hold_ms
        units_b = units if rng.random() < 0.7 else max(1, units + rng.choice((-1, 1)) * units // 2)
        first, price_a = self._open(symbol, t_ms, direction, units)
        second, price_b = self._open(symbol, by_ms, -direction, units_b)
        both = min(units, units_b)
        lots = _lots(both)
        order = len(self.orders)
        self.orders.append(RawOrder(c.ORDER_TYPE_CLOSE_BY, first.key, second.key))
        path = self._path(symbol)
        profit = path.to_account(direction * (price_b - price_a), lots, price_b)
        swap_a = self._swap(symbol, direction, lots, t_ms, close_ms)
        swap_b = self._swap(symbol, -direction, lots, by_ms, close_ms)
        self._deal(
            first,
            close_ms,
            direction < 0,
            c.DEAL_ENTRY_OUT_BY,
            lots,
            price_b,
            profit,
            swap_a,
            order=order,
        )
        self._deal(
            second,
            close_ms,
            direction > 0,
            c.DEAL_ENTRY_OUT_BY,
            lots,
            price_b,
            0.0,
            swap_b,
            order=order,
        )
        rest_ms = close_ms + int(rng.uniform(60, 7200) * 1000)
        if units > both:
            self._close(first, rest_ms, direction, units - both, price_a, t_ms)
        elif units_b > both:
            self._close(second, rest_ms, -direction, units_b - both, price_b, by_ms)

    def _netting_trade(self, symbol: str, t_ms: int, direction: int, units: int) -> None:
        """At most one position per symbol: maybe add, maybe reverse (INOUT), then close."""
        rng = self.rng
        meta, price = self._open(symbol, t_ms, direction, units)
        hold_ms = int(self._hold_s() * 1000)
        held, avg, since = units, price, t_ms
        if rng.random() < 0.2:  # add volume at a new price: the position price becomes a VWAP
            add_ms = t_ms + int(hold_ms * rng.uniform(0.05, 0.3))
            add = rng.choice(_VOLUMES)
            add_price = self._fill(symbol, add_ms, direction > 0)
            self._deal(meta, add_ms, direction > 0, c.DEAL_ENTRY_IN, _lots(add), add_price)
            avg = (avg * held + add_price * add) / (held + add)
            held += add
        if rng.random() < 0.15:  # reversal: one INOUT deal closes `held` and opens `extra`
            rev_ms = t_ms + int(hold_ms * rng.uniform(0.4, 0.6))
            extra = rng.choice(_VOLUMES)
            rev_price = self._fill(symbol, rev_ms, direction < 0)
            path = self._path(symbol)
            profit = path.to_account(direction * (rev_price - avg), _lots(held), rev_price)
            swap = self._swap(symbol, direction, _lots(held), since, rev_ms)
            self._deal(
                meta,
                rev_ms,
                direction < 0,
                c.DEAL_ENTRY_INOUT,
                _lots(held + extra),
                rev_price,
                profit,
                swap,
            )
            direction, held, avg, since = -direction, extra, rev_price, rev_ms
        exit_start = max(since, t_ms + int(hold_ms * 0.65))
        parts = rng.choice((2, 3)) if rng.random() < 0.25 and held >= 3 else 1
        chunks = self._split(held, parts) if parts > 1 else [held]
        for i, chunk in enumerate(chunks, start=1):
            exit_ms = exit_start + (t_ms + hold_ms - exit_start) * i // parts + i
            self._close(meta, exit_ms, direction, chunk, avg, since)
        self.busy_until[symbol] = meta.close_ms

    # ------------------------------------------------------------------ streams

    def trades(self) -> None:
        rate_per_ms = self.spec.trades_per_day / _DAY_MS
        if rate_per_ms <= 0:
            return
        t = float(self.start_ms) + 3_600_000.0
        limit = min(self.horizon_ms, self.end_ms)
        rng = self.rng
        while True:
            t += rng.expovariate(rate_per_ms)
            if t > limit:
                return
            t_ms = int(t)
            symbol = rng.choice(self.spec.symbols)
            direction = 1 if rng.random() < 0.5 else -1
            units = rng.choice(_VOLUMES)
            if self.hedging:
                self._hedging_trade(symbol, t_ms, direction, units)
            elif self.busy_until.get(symbol, 0) < t_ms:
                self._netting_trade(symbol, t_ms, direction, units)

    def cash_flows(self) -> None:
        """Initial deposit, then balance operations roughly every five days (own RNG stream)."""
        spec = self.spec
        rng = random.Random(f"cash:{self.seed}:{spec.server}:{spec.login}")
        self._cash(self.start_ms, c.DEAL_TYPE_BALANCE, spec.initial_deposit, "Initial deposit")
        kinds = (
            (c.DEAL_TYPE_BALANCE, 15, 500.0, 5000.0, "Deposit"),
            (c.DEAL_TYPE_BALANCE, 10, -2000.0, -100.0, "Withdrawal"),
            (c.DEAL_TYPE_CREDIT, 8, 100.0, 1000.0, "Credit bonus"),
            (c.DEAL_TYPE_COMMISSION_DAILY, 20, -20.0, -0.5, "Daily commission"),
            (c.DEAL_TYPE_INTEREST, 20, -15.0, 15.0, "Interest"),
            (c.DEAL_DIVIDEND, 12, 0.5, 50.0, "Dividend"),
            (c.DEAL_TAX, 15, -25.0, -0.5, "Tax"),
        )
        weights = [k[1] for k in kinds]
        credit = 0.0
        t = float(self.start_ms)
        limit = min(self.horizon_ms, self.end_ms)
        while True:
            t += rng.expovariate(1.0 / (_CASH_EVERY_S * 1000.0))
            if t > limit:
                return
            dtype, _, low, high, comment = rng.choices(kinds, weights=weights)[0]
            amount = _money(rng.uniform(low, high))
            if dtype == c.DEAL_TYPE_CREDIT:
                if credit > 0 and rng.random() < 0.3:
                    amount, comment = -credit, "Credit removed"
                credit = _money(credit + amount)
            self._cash(int(t), dtype, amount, comment)

    def agent_commissions(self) -> None:
        """Agent commissions as deals of their own (types 10/11, position 0): one a day at
        23:59 UTC, one a month on the 1st at 00:01 (own RNG stream; only with the quirk on)."""
        spec = self.spec
        if not spec.quirks.agent_commissions:
            return
        rng = random.Random(f"agent:{self.seed}:{spec.server}:{spec.login}")
        limit = min(self.horizon_ms, self.end_ms)
        day = self.start_ms // _DAY_MS + 1
        while True:
            midnight = day * _DAY_MS
            if midnight + 60_000 > limit:
                return
            if datetime.fromtimestamp(midnight / 1000, tz=UTC).day == 1:
                amount = _money(-rng.uniform(5.0, 40.0))
                self._cash(midnight + 60_000, c.DEAL_TYPE_COMMISSION_AGENT_MONTHLY, amount,
                           "Agent commission monthly")
            daily_ms = midnight + _DAY_MS - 60_000
            if daily_ms <= limit:
                amount = _money(-rng.uniform(0.2, 4.0))
                self._cash(daily_ms, c.DEAL_TYPE_COMMISSION_AGENT_DAILY, amount,
                           "Agent commission daily")
            day += 1

    def _cash(self, t_ms: int, dtype: int, amount: float, comment: str) -> None:
        self.deals.append(
            RawDeal(
                t_ms,
                len(self.deals),
                -1,
                NO_ORDER,
                dtype,
                c.DEAL_ENTRY_IN,
                0.0,
                0.0,
                0.0,
                0.0,
                amount,
                0.0,
                "",
                comment,
                c.DEAL_REASON_CLIENT,
                0,
            )
        )
