"""Trade reconstruction: deals grouped by position_id -> closed trades; positions -> open."""

from __future__ import annotations

import pytest

from mt5_sync.deal_sets import positions_needing_history
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.transform.records import deals_frame, positions_frame, quarantined_position_ids
from mt5_sync.transform.trades import build_trades, closed_trades, open_trades

from . import BUY, IN, INOUT, JUL, OUT, OUT_BY, SELL, cash, deal, position

NY7 = ServerTimeRule.parse("ny+7")


def _closed(raw_deals, **kw):
    frame = deals_frame(raw_deals)
    assert frame.quarantine == []
    result = closed_trades(frame.frame, NY7, **kw)
    return {t["ticket"]: t for t in result.closed}, result


def test_simple_round_trip_buy():
    trades, result = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=10, volume=1.0, price=1.1000, time=JUL,
                 commission=-3.5, magic=42, comment="entry"),
            deal(2, type=SELL, entry=OUT, position_id=10, volume=1.0, price=1.1050,
                 time=JUL + 3600, profit=500.0, swap=-1.2, commission=-3.5, fee=-0.1,
                 comment="tp"),
        ]
    )  # fmt: skip
    t = trades[10]
    assert t["status"] == "closed" and t["side"] == "buy" and t["symbol"] == "EURUSD"
    assert t["volume"] == 1.0
    assert t["open_price"] == 1.1000 and t["close_price"] == 1.1050
    assert t["open_time_server"] == JUL and t["close_time_server"] == JUL + 3600
    # ny+7 in July: server 15:00 -> 12:00 UTC
    assert t["open_time_utc"] == "2026-07-01T12:00:00+00:00"
    assert t["close_time_utc"] == "2026-07-01T13:00:00+00:00"
    assert t["profit"] == 500.0 and t["swap"] == -1.2
    assert t["commission"] == -7.0 and t["fee"] == -0.1
    assert t["net_profit"] == pytest.approx(500.0 - 1.2 - 7.0 - 0.1)
    assert t["magic"] == 42 and t["comment"] == "entry"
    assert t["deal_count"] == 2
    assert t["stop_loss"] is None and t["take_profit"] is None and t["current_price"] is None
    assert result.incomplete_positions == [] and result.skipped_positions == []


def test_partial_closes_are_summed():
    trades, _ = _closed(
        [
            deal(1, type=SELL, entry=IN, position_id=20, volume=1.0, price=1.2000, time=JUL),
            deal(2, type=BUY, entry=OUT, position_id=20, volume=0.3, price=1.1990,
                 time=JUL + 60, profit=30.0, swap=-0.5),
            deal(3, type=BUY, entry=OUT, position_id=20, volume=0.3, price=1.1980,
                 time=JUL + 120, profit=60.0, swap=-0.5),
            deal(4, type=BUY, entry=OUT, position_id=20, volume=0.4, price=1.1970,
                 time=JUL + 180, profit=120.0, swap=-0.5),
        ]
    )  # fmt: skip
    t = trades[20]
    assert t["side"] == "sell" and t["volume"] == pytest.approx(1.0)
    assert t["close_price"] == pytest.approx(0.3 * 1.1990 + 0.3 * 1.1980 + 0.4 * 1.1970)
    assert t["profit"] == pytest.approx(210.0) and t["swap"] == pytest.approx(-1.5)
    assert t["close_time_server"] == JUL + 180
    assert t["deal_count"] == 4


def test_partially_closed_position_is_not_a_closed_trade():
    trades, result = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=30, volume=1.0),
            deal(2, type=SELL, entry=OUT, position_id=30, volume=0.4, time=JUL + 60),
        ]
    )
    assert trades == {}
    assert result.incomplete_positions == []  # it is open, not broken


def test_close_by_closes_both_positions():
    trades, result = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=40, volume=1.0, price=1.1000, time=JUL),
            deal(2, type=SELL, entry=IN, position_id=41, volume=1.0, price=1.1020,
                 time=JUL + 10),
            # close-by: each position gets an OUT_BY deal at the opposite position's price
            deal(3, type=SELL, entry=OUT_BY, position_id=40, volume=1.0, price=1.1020,
                 time=JUL + 100, profit=20.0),
            deal(4, type=BUY, entry=OUT_BY, position_id=41, volume=1.0, price=1.1020,
                 time=JUL + 100, profit=0.0),
        ]
    )  # fmt: skip
    assert set(trades) == {40, 41}
    assert trades[40]["side"] == "buy" and trades[40]["close_price"] == 1.1020
    assert trades[41]["side"] == "sell" and trades[41]["close_time_server"] == JUL + 100
    assert trades[40]["net_profit"] == 20.0
    assert result.incomplete_positions == []


def test_netting_add_partial_close_and_reversal():
    trades, _ = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=50, volume=1.0, price=1.10, time=JUL,
                 magic=9, comment="first"),
            deal(2, type=BUY, entry=IN, position_id=50, volume=0.5, price=1.11,
                 time=JUL + 60, comment="add"),
            deal(3, type=SELL, entry=OUT, position_id=50, volume=0.5, price=1.12,
                 time=JUL + 120, profit=5.0),
            # reversal: closes the remaining 1.0 long, opens 1.0 short (same position id)
            deal(4, type=SELL, entry=INOUT, position_id=50, volume=2.0, price=1.13,
                 time=JUL + 180, profit=25.0),
            deal(5, type=BUY, entry=OUT, position_id=50, volume=1.0, price=1.12,
                 time=JUL + 240, profit=10.0),
        ]
    )  # fmt: skip
    t = trades[50]
    assert t["side"] == "buy"  # direction of the first IN deal
    assert t["volume"] == pytest.approx(2.5)  # 1.0 + 0.5 + 1.0 opened by the reversal
    assert t["open_price"] == pytest.approx((1.0 * 1.10 + 0.5 * 1.11 + 1.0 * 1.13) / 2.5)
    assert t["close_price"] == pytest.approx((0.5 * 1.12 + 1.0 * 1.13 + 1.0 * 1.12) / 2.5)
    assert t["profit"] == pytest.approx(40.0)
    assert t["open_time_server"] == JUL and t["close_time_server"] == JUL + 240
    assert t["magic"] == 9 and t["comment"] == "first"
    assert t["deal_count"] == 5


def test_reversal_still_open_is_not_closed():
    trades, result = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=51, volume=1.0),
            deal(2, type=SELL, entry=INOUT, position_id=51, volume=3.0, time=JUL + 60),
        ]
    )
    assert trades == {} and result.incomplete_positions == []


def test_deals_ordered_by_time_msc_then_ticket_not_input_order():
    trades, _ = _closed(
        [
            deal(9, type=SELL, entry=OUT, position_id=60, volume=1.0, price=1.2, time=JUL + 5),
            deal(7, type=BUY, entry=IN, position_id=60, volume=1.0, price=1.1, time=JUL),
        ]
    )
    assert trades[60]["open_price"] == 1.1 and trades[60]["close_price"] == 1.2


def test_canceled_deal_ignored_in_math_but_kept_in_ledger():
    raw = [
        deal(1, type=BUY, entry=IN, position_id=70, volume=1.0, price=1.1),
        deal(2, type=13, entry=IN, position_id=70, volume=5.0, price=9.9, time=JUL + 1,
             profit=999.0),  # BUY_CANCELED
        deal(3, type=SELL, entry=OUT, position_id=70, volume=1.0, price=1.2, time=JUL + 2,
             profit=100.0),
    ]  # fmt: skip
    frame = deals_frame(raw)
    assert len(frame.frame) == 3  # the ledger keeps it
    result = closed_trades(frame.frame, NY7)
    (t,) = result.closed
    assert t["volume"] == 1.0 and t["profit"] == 100.0 and t["deal_count"] == 2


def test_position_missing_its_in_deal_is_incomplete():
    trades, result = _closed(
        [
            deal(2, type=SELL, entry=OUT, position_id=80, volume=1.0, time=JUL + 60),
            deal(3, type=BUY, entry=IN, position_id=81, volume=1.0),
            deal(4, type=SELL, entry=OUT, position_id=81, volume=1.0, time=JUL + 60),
        ]
    )
    assert set(trades) == {81}
    assert result.incomplete_positions == [80]


def test_over_closing_deal_set_is_incomplete():
    # the fetched set has IN 0.5 but OUT 1.0: an earlier IN is missing
    trades, result = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=82, volume=0.5),
            deal(2, type=SELL, entry=OUT, position_id=82, volume=1.0, time=JUL + 60),
        ]
    )
    assert trades == {} and result.incomplete_positions == [82]


def test_position_with_quarantined_deal_is_skipped():
    raw = [
        deal(1, type=BUY, entry=IN, position_id=90, volume=1.0),
        deal(2, type=SELL, entry=OUT, position_id=90, volume=1.0, price=float("nan"),
             time=JUL + 60),
        deal(3, type=BUY, entry=IN, position_id=91, volume=1.0),
        deal(4, type=SELL, entry=OUT, position_id=91, volume=1.0, time=JUL + 60),
    ]  # fmt: skip
    frame = deals_frame(raw)
    assert [q["ticket"] for q in frame.quarantine] == [2]
    bad = quarantined_position_ids(frame.quarantine)
    result = closed_trades(frame.frame, NY7, quarantined_position_ids=bad)
    assert [t["ticket"] for t in result.closed] == [91]
    assert result.skipped_positions == [90]
    assert result.incomplete_positions == []


def test_cash_flows_are_not_trades():
    trades, result = _closed(
        [deal(1, type=2, entry=IN, volume=0.0, price=0.0, symbol="", profit=1000.0)]
    )
    assert trades == {} and result.incomplete_positions == []


def test_float_tolerance_on_partial_volumes():
    trades, _ = _closed(
        [
            deal(1, type=BUY, entry=IN, position_id=95, volume=0.3),
            deal(2, type=SELL, entry=OUT, position_id=95, volume=0.1, time=JUL + 1),
            deal(3, type=SELL, entry=OUT, position_id=95, volume=0.2, time=JUL + 2),
        ]
    )  # 0.3 - 0.1 - 0.2 != 0.0 exactly in binary floating point
    assert 95 in trades


def test_open_positions_become_open_trades():
    deals = deals_frame(
        [
            deal(1, type=SELL, entry=IN, position_id=100, volume=2.0, commission=-7.0,
                 fee=-0.2),
            deal(2, type=BUY, entry=OUT, position_id=100, volume=0.5, time=JUL + 60,
                 commission=-1.75),
        ]
    ).frame  # fmt: skip
    positions = positions_frame(
        [
            position(100, type=SELL, volume=1.5, price_open=1.2, price_current=1.19,
                     sl=1.25, tp=0.0, profit=15.0, swap=-2.0),
            position(101, type=BUY, volume=0.1, sl=0.0, tp=1.3),
        ]
    ).frame  # fmt: skip
    rows = {t["ticket"]: t for t in open_trades(positions, deals, NY7)}
    a, b = rows[100], rows[101]
    assert a["status"] == "open" and a["side"] == "sell" and a["volume"] == 1.5
    assert a["open_price"] == 1.2 and a["current_price"] == 1.19
    assert a["stop_loss"] == 1.25 and a["take_profit"] is None
    assert a["commission"] == -8.75 and a["fee"] == -0.2
    assert a["net_profit"] == pytest.approx(15.0 - 2.0 - 8.75 - 0.2)
    assert a["deal_count"] == 2
    assert a["close_price"] is None and a["close_time_utc"] is None
    assert a["close_time_server"] is None
    assert a["open_time_server"] == JUL
    assert a["open_time_utc"] == "2026-07-01T12:00:00.250000+00:00"  # from time_msc
    assert b["side"] == "buy" and b["stop_loss"] is None and b["take_profit"] == 1.3
    assert b["commission"] == 0.0 and b["deal_count"] == 0
    assert b["magic"] == 7 and b["comment"] == "open"


def test_position_closed_after_positions_get_is_emitted_once_as_closed():
    deals = deals_frame(
        [
            deal(1, type=BUY, entry=IN, position_id=110, volume=1.0),
            deal(2, type=SELL, entry=OUT, position_id=110, volume=1.0, time=JUL + 60),
        ]
    ).frame
    positions = positions_frame([position(110), position(111)]).frame
    result = build_trades(deals, positions, NY7)
    assert [t["ticket"] for t in result.closed] == [110]
    assert [t["ticket"] for t in result.open] == [111]
    assert result.superseded_open == [110]


def test_empty_inputs():
    empty = deals_frame([]).frame
    assert closed_trades(empty, NY7).closed == []
    assert open_trades(positions_frame([]).frame, empty, NY7) == []
    assert build_trades(empty, None, NY7).open == []


def test_positions_needing_history_agrees_with_incomplete_detection():
    raw = [
        # complete round trip
        deal(1, type=BUY, entry=IN, position_id=1),
        deal(2, type=SELL, entry=OUT, position_id=1, time=JUL + 1),
        # exit without IN
        deal(3, type=SELL, entry=OUT, position_id=2, time=JUL + 1),
        # netting: first IN before the window, the add and the close inside it
        deal(4, type=BUY, entry=IN, position_id=3, volume=0.5, time=JUL + 1),
        deal(5, type=SELL, entry=OUT, position_id=3, volume=1.5, time=JUL + 2),
        # open, no exit: nothing to fetch
        deal(6, type=BUY, entry=IN, position_id=4),
        # exit in the open direction
        deal(7, type=BUY, entry=IN, position_id=5),
        deal(8, type=BUY, entry=OUT, position_id=5, time=JUL + 1),
        # reversal then close: complete
        deal(9, type=BUY, entry=IN, position_id=6),
        deal(10, type=SELL, entry=INOUT, position_id=6, volume=2.0, time=JUL + 1),
        deal(11, type=BUY, entry=OUT, position_id=6, volume=1.0, time=JUL + 2),
        # cash flow and a record with garbage are ignored
        cash(12, 2, 100.0),
        deal(13, position_id=7) | {"volume": "x"},
    ]
    assert positions_needing_history(raw) == [2, 3, 5]
    frame = deals_frame(raw[:-1])
    assert closed_trades(frame.frame, NY7).incomplete_positions == [2, 3, 5]
