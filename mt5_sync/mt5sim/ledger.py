"""One account's ledger: raw deals numbered into MT5 records, server-timed, cached.

``generator.py`` produces the raw deals up to a *horizon*; here they are sorted by true time
and given tickets in that order (orders and deals share one per-account counter), converted
to the account server's wall clock and summed for balances. Since every deal happens at or
after its trade's arrival, deals up to the horizon - tickets included - never depend on how
far generation went; the broker view only shows deals up to ``now`` and asks for a horizon
>= now, regenerating when the clock passes it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from mt5_sync.mt5sim import constants as c
from mt5_sync.mt5sim.generator import NO_ORDER, OWN_ORDER, Generator, PositionMeta
from mt5_sync.mt5sim.structures import TradeDeal, TradeOrder
from mt5_sync.mt5sim.world import TIMELINE_DAYS, AccountSpec
from mt5_sync.servertime import ServerTimeRule

_HOUR_MS = 3_600_000
_TICKETS_PER_ACCOUNT = 1_000_000
_TICKET_BASE = 10_000_000
MALFORMED_TICKET_OFFSET = 900_000  # faults.py numbers its bogus deals from here
CORRECTION_TICKET_OFFSET = 800_000  # broker.py numbers its correction deals from here


def ticket_base(login: int) -> int:
    """First ticket of an account: ranges follow ``login % 10**6``.

    Accounts on one server have distinct logins, hence disjoint ranges; the n-th account of
    every server shares its range with the n-th of the others, so tickets collide across
    servers exactly as real, independent trade servers' tickets do.
    """
    return _TICKET_BASE + (login % 1_000_000) * _TICKETS_PER_ACCOUNT


class ServerClock:
    """True UTC milliseconds -> trade-server wall clock milliseconds, cached per UTC hour.

    Offsets only change on whole UTC hours (New York switches at 06:00/07:00 UTC).
    """

    def __init__(self, rule_text: str) -> None:
        self.rule = ServerTimeRule.parse(rule_text)
        self.offsets: dict[int, int] = {}  # UTC hour -> offset ms

    def offset_ms(self, utc_ms: int) -> int:
        hour = utc_ms // _HOUR_MS
        offset = self.offsets.get(hour)
        if offset is None:
            moment = datetime.fromtimestamp(hour * 3600, tz=UTC)
            offset = self.offsets[hour] = int(
                self.rule.offset_at_utc(moment).total_seconds() * 1000
            )
        return offset

    def to_server_ms(self, utc_ms: int) -> int:
        return utc_ms + self.offset_ms(utc_ms)


@lru_cache(maxsize=64)
def server_clock(rule_text: str) -> ServerClock:
    return ServerClock(rule_text)


@dataclass
class Ledger:
    """All deals of an account up to ``horizon_ms`` (plus later exits of those trades)."""

    horizon_ms: int
    deals: list[TradeDeal]
    deal_utc_ms: list[int]  # true UTC ms, sorted; parallel to ``deals``
    money_cum: list[float]  # running sum of non-credit money (balance) after each deal
    credit_cum: list[float]
    positions: list[PositionMeta]  # sorted by open time
    position_open_ms: list[int]
    _order_first: list[int]  # index of each order's first deal, in ticket (= time) order
    _close_by: dict[int, tuple[int, int]]  # close-by order ticket -> (position, position_by)
    _orders: tuple[list[TradeOrder], list[int]] | None = None

    def orders(self) -> tuple[list[TradeOrder], list[int]]:
        """(orders sorted by time, their true UTC ms); built on first use, rarely needed."""
        if self._orders is None:
            metas = {m.position_id: m for m in self.positions}
            rows = []
            for index in self._order_first:
                deal = self.deals[index]
                pair = self._close_by.get(deal.order)
                rows.append(_order(deal, metas[pair[0] if pair else deal.position_id], pair))
            self._orders = (rows, [self.deal_utc_ms[i] for i in self._order_first])
        return self._orders


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _number(gen: Generator, spec: AccountSpec, horizon_ms: int) -> Ledger:
    """Sort raw deals by true time, hand out tickets in that order, convert to server time.

    A position's opening deal comes first in time, so its id (the opening order's ticket) is
    known before any of its later deals is numbered: one pass does it all.
    """
    clock = server_clock(spec.time_rule)
    offsets = clock.offsets
    raw = sorted(gen.deals, key=lambda d: (d.utc_ms, d.seq))
    counter = ticket_base(spec.login)
    close_by_ticket: dict[int, int] = {}  # close-by order key -> ticket
    order_first: list[int] = []
    pos_ids: dict[int, int] = {}
    positions = gen.positions
    deals: list[TradeDeal] = []
    money_cum: list[float] = []
    credit_cum: list[float] = []
    money = credit = 0.0
    credit_type = c.DEAL_TYPE_CREDIT
    for i, d in enumerate(raw):
        order = position_id = 0
        if d.order != NO_ORDER:
            if d.order == OWN_ORDER:
                order = counter
            elif d.order in close_by_ticket:  # the second deal of a close-by
                order = close_by_ticket[d.order]
            else:
                order = close_by_ticket[d.order] = counter
            if order == counter:  # a new order takes the next ticket, before its deal
                order_first.append(i)
                counter += 1
            position_id = pos_ids.get(d.pos, 0)
            if not position_id:
                position_id = pos_ids[d.pos] = positions[d.pos].position_id = order
            positions[d.pos].deal_index.append(i)
        offset = offsets.get(d.utc_ms // _HOUR_MS)
        server_ms = d.utc_ms + (clock.offset_ms(d.utc_ms) if offset is None else offset)
        deals.append(
            TradeDeal(
                counter,
                order,
                server_ms // 1000,
                server_ms,
                d.type,
                d.entry,
                d.magic,
                position_id,
                d.reason,
                d.volume,
                d.price,
                d.commission,
                d.swap,
                d.profit,
                d.fee,
                d.symbol,
                d.comment,
                "",
            )
        )
        counter += 1
        if d.type == credit_type:
            credit += d.profit
        else:
            money += d.profit + d.swap + d.commission + d.fee
        money_cum.append(money)
        credit_cum.append(credit)
    positions.sort(key=lambda m: (m.open_ms, m.key))
    close_by = {
        ticket: (pos_ids[gen.orders[key].pos], pos_ids[gen.orders[key].pos_by])
        for key, ticket in close_by_ticket.items()
    }
    return Ledger(
        horizon_ms=horizon_ms,
        deals=deals,
        deal_utc_ms=[d.utc_ms for d in raw],
        money_cum=money_cum,
        credit_cum=credit_cum,
        positions=positions,
        position_open_ms=[m.open_ms for m in positions],
        _order_first=order_first,
        _close_by=close_by,
    )


def _order(deal: TradeDeal, meta: PositionMeta, close_by: tuple[int, int] | None) -> TradeOrder:
    """The filled order behind ``deal`` (its first deal): a market order or a close-by."""
    if close_by is None:
        buy = deal.type == c.DEAL_TYPE_BUY
        otype, position_id, position_by = (
            c.ORDER_TYPE_BUY if buy else c.ORDER_TYPE_SELL,
            deal.position_id,
            0,
        )
    else:
        otype, (position_id, position_by) = c.ORDER_TYPE_CLOSE_BY, close_by
    return TradeOrder(
        ticket=deal.order,
        time_setup=deal.time,
        time_setup_msc=deal.time_msc,
        time_done=deal.time,
        time_done_msc=deal.time_msc,
        time_expiration=0,
        type=otype,
        type_time=c.ORDER_TIME_GTC,
        type_filling=c.ORDER_FILLING_IOC,
        state=c.ORDER_STATE_FILLED,
        magic=meta.magic,
        position_id=position_id,
        position_by_id=position_by,
        reason=meta.reason,
        volume_initial=deal.volume,
        volume_current=0.0,
        price_open=deal.price,
        sl=meta.sl,
        tp=meta.tp,
        price_current=deal.price,
        price_stoplimit=0.0,
        symbol=deal.symbol,
        comment="",
        external_id="",
    )


def build_ledger(spec: AccountSpec, seed: int, start: datetime, horizon: datetime) -> Ledger:
    """Generate an account's ledger complete up to ``horizon`` (uncached)."""
    start_ms, horizon_ms = _ms(start), _ms(horizon)
    gen = Generator(spec, seed, start_ms, horizon_ms)
    gen.cash_flows()
    gen.agent_commissions()
    gen.trades()
    return _number(gen, spec, horizon_ms)


# ---------------------------------------------------------------------- cache

_CACHE: OrderedDict[tuple[object, ...], Ledger] = OrderedDict()
_CACHE_SIZE = int(os.environ.get("MT5SIM_LEDGER_CACHE", "256"))  # ~0.3 MB per ledger
_CACHE_LOCK = threading.Lock()


def _cache_key(spec: AccountSpec, seed: int, start: datetime) -> tuple[object, ...]:
    return (
        seed,
        _ms(start),
        spec.login,
        spec.server,
        spec.margin_mode,
        spec.time_rule,
        spec.initial_deposit,
        spec.trades_per_day,
        tuple(spec.symbols),
        spec.quirks.agent_commissions,
    )


def ledger_for(spec: AccountSpec, seed: int, start: datetime, now: datetime) -> Ledger:
    """The cached ledger, regenerated (a day past ``now``) when ``now`` passed its horizon."""
    key = _cache_key(spec, seed, start)
    end = start + timedelta(days=TIMELINE_DAYS)
    needed = min(_ms(now), _ms(end))
    with _CACHE_LOCK:
        ledger = _CACHE.get(key)
        if ledger is not None and ledger.horizon_ms >= needed:
            _CACHE.move_to_end(key)
            return ledger
    horizon = min(max(now, start) + timedelta(days=1), end)
    ledger = build_ledger(spec, seed, start, horizon)
    with _CACHE_LOCK:
        _CACHE[key] = ledger
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return ledger
