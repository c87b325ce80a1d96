"""Deals -> closed trades; open positions -> open trades.

A trade is one MT5 position: the BUY/SELL deals sharing ``position_id``. Per position the
deals are ordered by ``(time_msc, ticket)`` and a running signed volume is kept (BUY +,
SELL -):

- ``IN`` (0) opens or adds;
- ``OUT`` (1) and ``OUT_BY`` (3, close-by) reduce;
- ``INOUT`` (2, netting reversal) first closes the current volume, then opens the remainder
  in the opposite direction under the same ``position_id``.

A position is a *closed* trade when the running volume returns to 0 (within 1e-9 lots) after
at least one exit. A position that is not flat is open and comes from ``positions_get``.
``*_CANCELED`` deals (13/14) and cash flows are not part of the trade math (they stay in the
deals ledger). A deal set that does not tell a consistent story (first deal not ``IN``, an exit
larger than the open volume or in the wrong direction, an ``IN`` against the open direction) is
*incomplete*: it is reported, not emitted, so the history cursor does not move past it.

Everything is vectorised over the whole frame (sorted once, grouped by contiguous runs).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mt5_sync.contracts import TradeRow
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.transform.records import server_ms_to_iso
from mt5_sync.transform.schemas import (
    DEAL_ENTRY_IN,
    DEAL_ENTRY_INOUT,
    DEAL_TYPE_BUY,
    TRADE_DEAL_TYPES,
)

#: Lots below this are zero (float sums of partial closes are not exact).
VOLUME_TOLERANCE = 1e-9


@dataclass
class TradeBuild:
    """Trades reconstructed from one fetch."""

    closed: list[TradeRow] = field(default_factory=list)
    open: list[TradeRow] = field(default_factory=list)
    #: positions whose deal set is incomplete or inconsistent (no IN deal, over-closed, ...)
    incomplete_positions: list[int] = field(default_factory=list)
    #: positions skipped because one of their deals was quarantined
    skipped_positions: list[int] = field(default_factory=list)
    #: open positions dropped because their deals show them closed (closed after
    #: ``positions_get`` ran and before ``history_deals_get`` did)
    superseded_open: list[int] = field(default_factory=list)


def _trade_deals(deals: pd.DataFrame) -> pd.DataFrame:
    trade = deals.loc[deals["type"].isin(TRADE_DEAL_TYPES)]
    return trade.sort_values(["position_id", "time_msc", "ticket"], kind="stable")


def closed_trades(
    deals: pd.DataFrame,
    rule: ServerTimeRule,
    *,
    quarantined_position_ids: Collection[int] = (),
) -> TradeBuild:
    """Closed trades from a validated deals frame (see module doc for the rules).

    Fills ``closed``, ``incomplete_positions`` and ``skipped_positions`` (positions with a
    quarantined deal); ``open`` is left empty (see :func:`open_trades`).
    """
    result = TradeBuild()
    if deals.empty:
        return result
    d = _trade_deals(deals)
    n = len(d)
    if n == 0:
        return result

    pid = d["position_id"].to_numpy()
    vol = d["volume"].to_numpy(dtype="float64")
    price = d["price"].to_numpy(dtype="float64")
    entry = d["entry"].to_numpy()
    is_buy = d["type"].to_numpy() == DEAL_TYPE_BUY

    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    ends = np.r_[starts[1:], n] - 1
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))

    signed = np.where(is_buy, vol, -vol)
    running = pd.Series(signed).groupby(group).cumsum().to_numpy()
    prev = running - signed
    abs_prev = np.abs(prev)
    flat_before = abs_prev <= VOLUME_TOLERANCE
    against = (signed * prev < 0) & ~flat_before  # deal direction opposes the exposure

    is_in = entry == DEAL_ENTRY_IN
    is_inout = entry == DEAL_ENTRY_INOUT
    is_out = ~is_in & ~is_inout  # OUT (1) and OUT_BY (3); entry is validated to 0..3

    close_part = np.where(is_in, 0.0, np.where(is_inout, np.minimum(vol, abs_prev), vol))
    open_part = vol - close_part

    inconsistent = (
        (is_in & against)
        | (is_out & (~against | (vol > abs_prev + VOLUME_TOLERANCE)))
        | (is_inout & (~against | (vol < abs_prev - VOLUME_TOLERANCE)))
    )
    exits = close_part > VOLUME_TOLERANCE

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts)

    first_is_in = is_in[starts]
    any_inconsistent = per_group(inconsistent.astype(np.int64)) > 0
    exit_count = per_group(exits.astype(np.int64))
    final = running[ends]
    positions = pid[starts]

    skipped = np.isin(positions, np.fromiter(quarantined_position_ids, np.int64))
    incomplete = ~skipped & (~first_is_in | any_inconsistent)
    closed = ~skipped & ~incomplete & (np.abs(final) <= VOLUME_TOLERANCE) & (exit_count > 0)
    result.skipped_positions = positions[skipped].tolist()
    result.incomplete_positions = positions[incomplete].tolist()
    if not closed.any():
        return result

    open_vol = per_group(open_part)
    open_value = per_group(open_part * price)
    close_vol = per_group(close_part)
    close_value = per_group(close_part * price)
    sums = {
        c: per_group(d[c].to_numpy(dtype="float64"))
        for c in ("profit", "swap", "commission", "fee")
    }
    # the last exit deal of each group: row index where exits, else -1, max per group
    last_exit = np.maximum.reduceat(np.where(exits, np.arange(n), -1), starts)

    sel = np.flatnonzero(closed)
    first_rows = starts[sel]  # complete groups start with their first IN deal
    exit_rows = last_exit[sel]
    time_msc = d["time_msc"].to_numpy()
    time_sec = d["time"].to_numpy()
    open_iso = server_ms_to_iso(time_msc[first_rows], rule)
    close_iso = server_ms_to_iso(time_msc[exit_rows], rule)
    profit, swap = sums["profit"][sel], sums["swap"][sel]
    commission, fee = sums["commission"][sel], sums["fee"][sel]
    net = profit + swap + commission + fee
    symbols = d["symbol"].to_numpy(object)[first_rows]
    comments = d["comment"].to_numpy(object)[first_rows]

    result.closed = [
        {
            "ticket": t,
            "symbol": str(sym),
            "side": "buy" if buy else "sell",
            "status": "closed",
            "volume": v,
            "open_price": op,
            "open_time_utc": ot,
            "open_time_server": ots,
            "close_price": cp,
            "close_time_utc": ct,
            "close_time_server": cts,
            "stop_loss": None,
            "take_profit": None,
            "current_price": None,
            "profit": pr,
            "swap": sw,
            "commission": co,
            "fee": fe,
            "net_profit": ne,
            "magic": mg,
            "comment": str(cm),
            "deal_count": dc,
        }
        for t, sym, buy, v, op, ot, ots, cp, ct, cts, pr, sw, co, fe, ne, mg, cm, dc in zip(
            positions[sel].tolist(),
            symbols.tolist(),
            is_buy[first_rows].tolist(),
            open_vol[sel].tolist(),
            (open_value[sel] / open_vol[sel]).tolist(),
            open_iso,
            time_sec[first_rows].tolist(),
            (close_value[sel] / close_vol[sel]).tolist(),
            close_iso,
            time_sec[exit_rows].tolist(),
            profit.tolist(),
            swap.tolist(),
            commission.tolist(),
            fee.tolist(),
            net.tolist(),
            d["magic"].to_numpy()[first_rows].tolist(),
            comments.tolist(),
            (ends - starts + 1)[sel].tolist(),
            strict=True,
        )
    ]
    return result


def open_trades(
    positions: pd.DataFrame, deals: pd.DataFrame, rule: ServerTimeRule
) -> list[TradeRow]:
    """Open positions -> ``TradeRow`` (status "open"), ticket = position identifier.

    commission/fee are the sums over the position's known BUY/SELL deals (0 if none);
    ``deal_count`` counts them; profit/swap are the position's floating values.
    """
    if positions.empty:
        return []
    ids = positions["identifier"]
    # Per-position sums over the known trade deals of *these* positions only: a plain dict
    # pass (a pandas groupby + map costs ~20 ms per account on 100-row frames, more than the
    # rest of this function; math.fsum keeps the sums exact whatever the deal order).
    id_list = ids.tolist()
    wanted = set(id_list)
    parts: dict[int, tuple[list[float], list[float]]] = {p: ([], []) for p in wanted}
    if not deals.empty:
        trade = np.isin(deals["type"].to_numpy(), TRADE_DEAL_TYPES)
        for pid, com, fe in zip(
            deals["position_id"].to_numpy()[trade].tolist(),
            deals["commission"].to_numpy()[trade].tolist(),
            deals["fee"].to_numpy()[trade].tolist(),
            strict=True,
        ):
            if pid in wanted:
                parts[pid][0].append(com)
                parts[pid][1].append(fe)
    commission = np.array([math.fsum(parts[p][0]) for p in id_list], dtype="float64")
    fee = np.array([math.fsum(parts[p][1]) for p in id_list], dtype="float64")
    count = np.array([len(parts[p][0]) for p in id_list], dtype="int64")
    profit = positions["profit"].to_numpy(dtype="float64")
    swap = positions["swap"].to_numpy(dtype="float64")
    net = profit + swap + commission + fee
    sl = positions["sl"].to_numpy(dtype="float64")
    tp = positions["tp"].to_numpy(dtype="float64")
    open_iso = server_ms_to_iso(positions["time_msc"].to_numpy(), rule)
    return [
        {
            "ticket": t,
            "symbol": str(sym),
            "side": "buy" if typ == 0 else "sell",
            "status": "open",
            "volume": v,
            "open_price": op,
            "open_time_utc": ot,
            "open_time_server": ots,
            "close_price": None,
            "close_time_utc": None,
            "close_time_server": None,
            "stop_loss": s if s != 0.0 else None,
            "take_profit": p if p != 0.0 else None,
            "current_price": cur,
            "profit": pr,
            "swap": sw,
            "commission": co,
            "fee": fe,
            "net_profit": ne,
            "magic": mg,
            "comment": str(cm),
            "deal_count": dc,
        }
        for t, sym, typ, v, op, ot, ots, s, p, cur, pr, sw, co, fe, ne, mg, cm, dc in zip(
            id_list,
            positions["symbol"].to_numpy(object).tolist(),
            positions["type"].tolist(),
            positions["volume"].tolist(),
            positions["price_open"].tolist(),
            open_iso,
            positions["time"].tolist(),
            sl.tolist(),
            tp.tolist(),
            positions["price_current"].tolist(),
            profit.tolist(),
            swap.tolist(),
            commission.tolist(),
            fee.tolist(),
            net.tolist(),
            positions["magic"].tolist(),
            positions["comment"].to_numpy(object).tolist(),
            count.tolist(),
            strict=True,
        )
    ]


def build_trades(
    deals: pd.DataFrame,
    positions: pd.DataFrame | None,
    rule: ServerTimeRule,
    *,
    quarantined_position_ids: Collection[int] = (),
) -> TradeBuild:
    """Closed trades from deals plus open trades from positions (``None``: not fetched).

    A position both open in ``positions`` and closed by its deals (it closed between the two
    terminal calls) is emitted once, as closed.
    """
    result = closed_trades(deals, rule, quarantined_position_ids=quarantined_position_ids)
    if positions is None or positions.empty:
        return result
    closed_ids = {t["ticket"] for t in result.closed}
    if closed_ids:
        superseded = positions["identifier"].isin(list(closed_ids))
        result.superseded_open = positions.loc[superseded, "identifier"].tolist()
        positions = positions.loc[~superseded]
    result.open = open_trades(positions, deals, rule)
    return result
