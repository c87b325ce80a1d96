"""Raw MT5 records -> validated frames -> rows; bad records quarantined with reasons."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from mt5_sync.servertime import ServerTimeRule
from mt5_sync.transform.records import (
    account_frame,
    deals_frame,
    json_safe,
    positions_frame,
    server_ms_to_iso,
    to_account_row,
    to_cash_flow_rows,
    to_deal_rows,
    to_snapshot_row,
)
from mt5_sync.transform.schemas import (
    ACCOUNT_FIELDS,
    CASH_FLOW_KINDS,
    DEAL_FIELDS,
    POSITION_FIELDS,
)

from . import JAN, JUL, SELL, account_info, backfill, cash, deal, position

NY7 = ServerTimeRule.parse("ny+7")
REFERENCE = "/work/shared/reference/metatrader5-5.0.6231.json"


def test_field_lists_match_the_reference_structures():
    try:
        with open(REFERENCE) as fh:
            structures = json.load(fh)["structures"]
    except FileNotFoundError:  # pragma: no cover - reference outside the repo
        pytest.skip("reference JSON not available")
    assert list(DEAL_FIELDS) == structures["TradeDeal"]
    assert list(POSITION_FIELDS) == structures["TradePosition"]
    assert list(ACCOUNT_FIELDS) == structures["AccountInfo"]
    assert list(deal(1)) == structures["TradeDeal"]
    assert list(position(1)) == structures["TradePosition"]
    assert list(account_info()) == structures["AccountInfo"]


# ---------------------------------------------------------------- deals


def test_valid_deal_becomes_a_row_with_utc_time():
    raw = deal(123, order=456, position_id=77, time=JUL, msc=250, volume=0.5, price=1.17,
               commission=-2.5, swap=-0.3, profit=12.0, fee=-0.1, magic=9, comment="c")  # fmt: skip
    frame = deals_frame([raw])
    assert frame.quarantine == []
    (row,) = to_deal_rows(frame.frame, NY7)
    assert row == {
        "ticket": 123,
        "order_ticket": 456,
        "position_id": 77,
        "time_utc": "2026-07-01T12:00:00.250000+00:00",
        "time_server": JUL,
        "time_msc_server": JUL * 1000 + 250,
        "type": 0,
        "entry": 0,
        "magic": 9,
        "reason": 0,
        "volume": 0.5,
        "price": 1.17,
        "commission": -2.5,
        "swap": -0.3,
        "profit": 12.0,
        "fee": -0.1,
        "symbol": "EURUSD",
        "comment": "c",
        "external_id": "",
    }
    assert all(type(row[k]) is int for k in ("ticket", "order_ticket", "time_server"))
    assert all(type(row[k]) is float for k in ("volume", "price", "profit"))


def test_ny7_server_time_is_converted_to_utc_in_summer_and_winter():
    summer = int(datetime(2026, 7, 1, 15, 0, tzinfo=UTC).timestamp())
    winter = int(datetime(2026, 1, 15, 15, 0, tzinfo=UTC).timestamp())
    rows = to_deal_rows(deals_frame([deal(1, time=summer), deal(2, time=winter)]).frame, NY7)
    assert rows[0]["time_utc"] == "2026-07-01T12:00:00+00:00"
    assert rows[1]["time_utc"] == "2026-01-15T13:00:00+00:00"
    assert rows[0]["time_server"] == summer  # the raw server epoch is kept


def test_vectorised_time_conversion_matches_servertime_exactly():
    rules = ["ny+7", "ny+7.5", "ny-2", "fixed:+2", "fixed:-3.5", "utc"]
    days = [(2026, 3, 8), (2026, 11, 1), (2025, 3, 9), (2025, 11, 2), (2026, 7, 1)]
    values = []
    for day in days:  # every 7 minutes through both DST switch days, odd millis
        base = int(datetime(*day, tzinfo=UTC).timestamp())
        values += [(base + m * 60 + 30) * 1000 + (m * 7) % 1000 for m in range(0, 1440, 7)]
        values += [(base + h * 3600) * 1000 for h in range(24)]
    for text in rules:
        rule = ServerTimeRule.parse(text)
        got = server_ms_to_iso(np.array(values), rule)
        assert got == [rule.to_utc_msc(v).isoformat() for v in values], text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"price": math.nan}, "price is NaN"),
        ({"volume": -1.0}, "volume must be >= 0 (got -1.0)"),
        ({"symbol": ""}, "symbol is empty for a trade deal (got '')"),
        ({"time": 0}, "time is not a plausible server time (2000..2100) (got 0)"),
        ({"type": 99}, "type is not a known deal type (0..17) (got 99)"),
        ({"entry": 7}, "entry is not a known deal entry (0..3) (got 7)"),
        ({"commission": math.inf}, "commission is not a finite number (got inf)"),
        ({"profit": -math.inf}, "profit is not a finite number (got -inf)"),
        ({"price": None}, "price is missing (None)"),
        ({"price": "1.1"}, "price is not a number (got '1.1')"),
        ({"ticket": -5}, "ticket must be > 0 (got -5)"),
        ({"position_id": 0}, "position_id must be > 0 for BUY/SELL deals (got 0)"),
        ({"volume": 0.0}, "volume must be > 0 for BUY/SELL deals (got 0.0)"),
        ({"price": 0.0}, "price must be > 0 for BUY/SELL deals (got 0.0)"),
        ({"magic": 1.5}, "magic is not an integer (got 1.5)"),
        ({"comment": None}, "comment is missing (None)"),
        ({"symbol": 5}, "symbol is not a string (got 5)"),
        ({"time_msc": 5}, "time_msc does not match time (±1 s) (got 5)"),
    ],
)
def test_bad_deal_is_quarantined_with_a_readable_reason_and_the_rest_kept(change, reason):
    bad = deal(2, position_id=2) | change
    frame = deals_frame([deal(1), bad, deal(3)])
    assert frame.frame["ticket"].tolist() == [1, 3]
    (q,) = frame.quarantine
    assert q["kind"] == "deal"
    assert q["ticket"] == (2 if "ticket" not in change else None if change["ticket"] is None
                           else change["ticket"])  # fmt: skip
    assert reason in q["reasons"]
    json.dumps(q, allow_nan=False)  # the raw record is JSON-safe (NaN/inf as strings)
    for key in DEAL_FIELDS:
        assert key in q["record"]


def test_several_failures_of_one_deal_are_all_named():
    bad = deal(9) | {"price": math.nan, "volume": -2.0, "type": 42}
    (q,) = deals_frame([bad]).quarantine
    assert "price is NaN" in q["reasons"]
    assert "volume must be >= 0 (got -2.0)" in q["reasons"]
    assert "type is not a known deal type (0..17) (got 42)" in q["reasons"]
    assert q["record"]["price"] == "nan"


def test_missing_field_is_quarantined():
    bad = deal(2)
    del bad["price"]
    del bad["fee"]
    frame = deals_frame([deal(1), bad])
    assert frame.frame["ticket"].tolist() == [1]
    (q,) = frame.quarantine
    assert q["reasons"] == "missing field price, fee"
    assert q["ticket"] == 2


def test_extra_field_is_ignored():
    frame = deals_frame([deal(1) | {"new_field_from_a_newer_terminal": 1}])
    assert frame.quarantine == [] and len(frame.frame) == 1
    assert list(frame.frame.columns) == list(DEAL_FIELDS)


def test_non_mapping_record_is_quarantined():
    frame = deals_frame([deal(1), None, (1, 2, 3)])  # type: ignore[list-item]
    assert len(frame.frame) == 1
    assert [q["reasons"] for q in frame.quarantine] == ["record is not a mapping"] * 2
    assert frame.quarantine[1]["record"] == {"value": [1, 2, 3]}


def test_unreadable_ticket_is_none_in_quarantine():
    (q,) = deals_frame([deal(1) | {"ticket": "abc"}]).quarantine
    assert q["ticket"] is None
    assert "ticket is not an integer (got 'abc')" in q["reasons"]


def test_time_msc_within_one_second_is_tolerated():
    frame = deals_frame([deal(1) | {"time_msc": JUL * 1000 + 1999}])
    assert frame.quarantine == []


def test_cash_flow_deals_need_no_symbol_position_volume_or_price():
    frame = deals_frame([cash(1, 2, 500.0), cash(2, 17, -12.5)])
    assert frame.quarantine == []


def test_canceled_deal_needs_symbol_but_may_have_zero_volume():
    frame = deals_frame(
        [deal(1, type=13, volume=0.0), deal(2, type=14, symbol=""), deal(3, type=13)]
    )
    assert [q["ticket"] for q in frame.quarantine] == [2]


def test_duplicate_tickets_keep_the_last_version():
    frame = deals_frame([deal(1, type=0), deal(2), deal(1, type=13)])
    assert frame.duplicates == 1
    assert sorted(frame.frame["ticket"].tolist()) == [1, 2]
    assert frame.frame.set_index("ticket").loc[1, "type"] == 13


def test_frame_dtypes():
    frame = deals_frame([deal(1), deal(2) | {"price": None}]).frame
    assert str(frame["ticket"].dtype) == "int64"
    assert str(frame["price"].dtype) == "float64"
    empty = deals_frame([]).frame
    assert list(empty.columns) == list(DEAL_FIELDS) and empty.empty
    assert deals_frame(None).frame.empty


def test_cash_flow_rows_and_kinds():
    raw = [deal(1), deal(2, type=SELL, entry=1, position_id=1, time=JUL + 60)]
    raw += [cash(100 + t, t, 10.0 * t, comment=f"k{t}") for t in CASH_FLOW_KINDS]
    raw.append(cash(200, 7, -3.0) | {"commission": -1.0, "swap": -0.5, "fee": -0.25})
    frame = deals_frame(raw)
    assert frame.quarantine == []
    rows = to_cash_flow_rows(frame.frame, NY7)
    kinds = {r["deal_ticket"]: r["kind"] for r in rows}
    assert kinds == {
        102: "balance", 103: "credit", 104: "charge", 105: "correction", 106: "bonus",
        107: "commission", 108: "commission_daily", 109: "commission_monthly",
        110: "commission_agent_daily", 111: "commission_agent_monthly", 112: "interest",
        115: "dividend", 116: "dividend_franked", 117: "tax", 200: "commission",
    }  # fmt: skip
    by_ticket = {r["deal_ticket"]: r for r in rows}
    assert by_ticket[102] == {
        "deal_ticket": 102,
        "type": 2,
        "kind": "balance",
        "amount": 20.0,
        "time_utc": "2026-07-01T12:00:00+00:00",
        "time_server": JUL,
        "comment": "k2",
    }
    assert by_ticket[200]["amount"] == pytest.approx(-4.75)  # profit + commission + swap + fee
    # cash flows also stay in the deals ledger; trade deals are not cash flows
    assert len(to_deal_rows(frame.frame, NY7)) == len(raw)


# ---------------------------------------------------------------- positions


def test_valid_positions_frame():
    frame = positions_frame([position(1), position(2, type=SELL)])
    assert frame.quarantine == []
    assert frame.frame["identifier"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"volume": 0.0}, "volume must be > 0 (got 0.0)"),
        ({"price_open": math.nan}, "price_open is NaN"),
        ({"type": 2}, "type is not a known position type (0 buy, 1 sell) (got 2)"),
        ({"symbol": "  "}, "symbol is empty (got '  ')"),
        ({"identifier": 0}, "identifier must be > 0 (got 0)"),
        ({"time": 12}, "time is not a plausible server time"),
        ({"sl": -1.0}, "sl must be >= 0 (got -1.0)"),
        ({"profit": math.inf}, "profit is not a finite number (got inf)"),
    ],
)
def test_bad_position_is_quarantined(change, reason):
    frame = positions_frame([position(1), position(2) | change])
    assert frame.frame["ticket"].tolist() == [1]
    (q,) = frame.quarantine
    assert q["kind"] == "position" and q["ticket"] == 2
    assert reason in q["reasons"]
    json.dumps(q, allow_nan=False)


# ---------------------------------------------------------------- account


def test_account_row_and_snapshot():
    frame = account_frame(account_info())
    assert frame.quarantine == []
    row = to_account_row(frame.frame)
    assert row == {
        "login": 5001234,
        "server": "Broker-Demo",
        "name": "Demo Trader",
        "company": "Broker Ltd",
        "currency": "USD",
        "leverage": 100,
        "margin_mode": "hedging",
        "balance": 10_000.0,
        "credit": 0.0,
        "profit": 48.5,
        "equity": 10_048.5,
        "margin": 1_100.0,
        "free_margin": 8_948.5,
        "margin_level": 913.5,
    }
    snap = to_snapshot_row(row, "2026-07-01T12:30:00+00:00")
    assert snap == {
        "taken_at": "2026-07-01T12:30:00+00:00",
        "balance": 10_000.0,
        "equity": 10_048.5,
        "margin": 1_100.0,
        "free_margin": 8_948.5,
        "margin_level": 913.5,
    }


@pytest.mark.parametrize(("mode", "text"), [(0, "netting"), (1, "exchange"), (2, "hedging")])
def test_margin_modes(mode, text):
    row = to_account_row(account_frame(account_info(margin_mode=mode)).frame)
    assert row is not None and row["margin_mode"] == text


def test_margin_level_is_none_without_margin():
    row = to_account_row(account_frame(account_info(margin=0.0, margin_level=0.0)).frame)
    assert row is not None and row["margin_level"] is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"balance": math.nan}, "balance is NaN"),
        ({"equity": math.inf}, "equity is not a finite number (got inf)"),
        ({"login": 0}, "login must be > 0 (got 0)"),
        ({"margin_free": None}, "margin_free is missing (None)"),
        ({"margin_mode": 5}, "margin_mode is not a known margin mode"),
    ],
)
def test_invalid_account_is_quarantined(change, reason):
    frame = account_frame(account_info(**change))
    assert to_account_row(frame.frame) is None
    (q,) = frame.quarantine
    assert q["kind"] == "account" and q["ticket"] is None
    assert reason in q["reasons"]
    json.dumps(q, allow_nan=False)


def test_account_missing_field_is_quarantined():
    info = account_info()
    del info["assets"]
    frame = account_frame(info)
    assert to_account_row(frame.frame) is None
    assert frame.quarantine[0]["reasons"] == "missing field assets"


def test_account_none_means_not_fetched():
    frame = account_frame(None)
    assert frame.quarantine == [] and to_account_row(frame.frame) is None


# ---------------------------------------------------------------- JSON safety, volume


def test_json_safe():
    raw = {"a": math.nan, "b": math.inf, "c": np.int64(3), "d": [np.float64(1.5)], "e": b"x"}
    assert json_safe(raw | {"f": datetime(2026, 1, 1)}) == {
        "a": "nan",
        "b": "inf",
        "c": 3,
        "d": [1.5],
        "e": "x",
        "f": "2026-01-01 00:00:00",
    }


def test_200k_deal_backfill_converts():
    # how fast: scripts/bench_transform.py (speed is measured in benchmarks, not tests)
    raw = backfill(200_000)
    frame = deals_frame(raw)
    rows = to_deal_rows(frame.frame, NY7)
    assert frame.quarantine == [] and len(rows) == 200_000
    assert rows[0]["time_utc"].startswith("2026-01-15T13:00:")  # JAN server 15:00 = 13:00 UTC
    assert rows[0]["time_server"] == JAN


@pytest.mark.parametrize(
    "value",
    [[1, 2], {"a": 1}, (1.0,), b"EURUSD", True, 2**70, -(2**70), np.int64(5), np.float64(1.5),
     object(), math.nan, "", None],
)  # fmt: skip
def test_odd_values_in_every_field_never_crash(value):
    for field in DEAL_FIELDS:
        raws = [deal(1), deal(2) | {field: value}, deal(3)]
        frame = deals_frame(raws)
        # (True in a clean int column reads as 1, then ticket 1 is a duplicate)
        assert len(frame.frame) + len(frame.quarantine) + frame.duplicates == 3, field
        json.dumps(frame.quarantine, allow_nan=False)
        to_deal_rows(frame.frame, NY7)
    # and a whole column of them
    raws = [deal(i) | {"symbol": value, "price": value, "ticket": value} for i in range(1, 4)]
    frame = deals_frame(raws)
    assert len(frame.frame) + len(frame.quarantine) == 3


def _pandera_passes(typed, spec) -> bool:
    import pandera.pandas as pa

    try:
        spec.schema.validate(typed.copy(), lazy=True)
    except pa.errors.SchemaErrors:
        return False
    return True


@pytest.mark.parametrize("spec_name", ["deal", "position", "account"])
def test_fast_pass_agrees_with_pandera_on_every_corruption(spec_name):
    """``all_rules_pass`` only skips pandera when pandera would pass: checked on clean
    records and on every field of every record kind set to every odd value."""
    from mt5_sync.transform import records
    from mt5_sync.transform.schemas import SPECS

    spec = SPECS[spec_name]
    make = {"deal": lambda i: deal(i, position_id=i), "position": lambda i: position(i),
            "account": lambda i: account_info()}[spec_name]  # fmt: skip
    odd = [math.nan, math.inf, -math.inf, None, "", " ", "1.1", -1, 0, 0.0, -0.5, 1.5, 99,
           2**70, True, 10**12, "EURUSD"]  # fmt: skip
    cases = [[make(1), make(2)]]
    cases += [[make(1), make(2) | {f: v}] for f in spec.columns for v in odd]
    disagreements = []
    passes = 0
    for raws in cases:
        typed = records._coerce(records._column_values(raws, spec), spec)
        fast, slow = records.all_rules_pass(typed, spec), _pandera_passes(typed, spec)
        passes += slow
        if fast != slow:
            disagreements.append((raws[-1], fast, slow))
    assert not disagreements, disagreements[:3]
    assert passes and passes < len(cases)  # both verdicts were exercised
