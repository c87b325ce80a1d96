"""FetchResult -> CommitPayload: statuses, error text, cursor rules, JSON safety."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mt5_sync import errors
from mt5_sync.contracts import CommitPayload, FetchResult, PartError
from mt5_sync.transform.payload import SyncContext, TransformReport, build_commit_payload

from . import BUY, IN, JUL, OUT, SELL, account_info, backfill, cash, deal, fetch_result, position

STARTED = datetime(2026, 7, 1, 12, 29, 58, tzinfo=UTC)
COMPLETED = STARTED + timedelta(seconds=2, milliseconds=345)
FETCHED_AT = "2026-07-01T12:30:00+00:00"


def newest_deal_time(payload) -> str | None:
    """The cursor follows the data: the newest deal time read (UTC), never past now; no deal
    read, no move."""
    if not payload["deals"]:
        return None
    newest = max(datetime.fromisoformat(d["time_utc"]) for d in payload["deals"])
    return min(newest, datetime.fromisoformat(FETCHED_AT)).isoformat()


IPC_TIMEOUT = PartError("history", "terminal_timeout", "IPC timeout", -10005)


def ctx(**overrides: Any) -> SyncContext:
    values: dict[str, Any] = dict(
        sync_id="sync-1",
        account_id="acc-1",
        execution_id="exec-1",
        flow_run_id="run-1",
        trigger="scheduled",
        sync_type="incremental",
        started_at=STARTED,
        time_rule="ny+7",
        lease_holder="worker-a",
    )
    values.update(overrides)
    return SyncContext(**values)


def good_deals():
    return [
        cash(1, 2, 10_000.0, time=JUL - 86_400, comment="deposit"),
        deal(10, type=BUY, entry=IN, position_id=10, volume=1.0, price=1.10, commission=-3.5),
        deal(11, type=SELL, entry=OUT, position_id=10, volume=1.0, price=1.11, time=JUL + 60,
             profit=100.0, commission=-3.5),
        deal(20, type=SELL, entry=IN, position_id=20, volume=0.5, price=1.12,
             time=JUL + 120, commission=-1.75),
    ]  # fmt: skip


def build(fetch: FetchResult, **ctx_overrides: Any) -> tuple[CommitPayload, TransformReport]:
    payload, report = build_commit_payload(fetch, ctx(**ctx_overrides), completed_at=COMPLETED)
    # JSON-safe: no NaN/inf, only plain types
    json.dumps(payload, allow_nan=False)
    return payload, report


def test_success_payload():
    fetch = fetch_result(
        account=account_info(), positions=[position(20, type=SELL, volume=0.5)],
        deals=good_deals(),
    )  # fmt: skip
    payload, report = build(fetch)
    assert payload["status"] == "success"
    assert payload["error_message"] is None and payload["error_code"] is None
    assert payload["sync_id"] == "sync-1" and payload["account_id"] == "acc-1"
    assert payload["execution_id"] == "exec-1" and payload["flow_run_id"] == "run-1"
    assert payload["trigger"] == "scheduled" and payload["sync_type"] == "incremental"
    assert payload["lease_holder"] == "worker-a"
    assert payload["started_at"] == "2026-07-01T12:29:58+00:00"
    assert payload["completed_at"] == "2026-07-01T12:30:00.345000+00:00"
    assert payload["duration_ms"] == 2345
    assert payload["account"] is not None and payload["account"]["login"] == 5001234
    assert payload["snapshot"] is not None
    assert payload["snapshot"]["taken_at"] == FETCHED_AT
    assert payload["snapshot"]["equity"] == payload["account"]["equity"]
    assert [t["ticket"] for t in payload["closed_trades"]] == [10]
    assert payload["open_positions"] is not None
    assert [t["ticket"] for t in payload["open_positions"]] == [20]
    assert payload["open_positions"][0]["commission"] == -1.75  # from its known IN deal
    assert len(payload["deals"]) == 4
    assert [c["kind"] for c in payload["cash_flows"]] == ["balance"]
    assert payload["quarantine"] == []
    assert payload["history_cursor"] == newest_deal_time(payload)
    assert report.deals == 4 and report.cash_flows == 1
    assert report.trades_closed == 1 and report.trades_open == 1
    assert report.quarantined == 0 and report.account is True
    assert report.status == "success"
    json.dumps(report.as_dict())


def test_partial_when_history_failed():
    fetch = fetch_result(account=account_info(), positions=[position(20)], deals=None,
                         errors=[IPC_TIMEOUT])  # fmt: skip
    payload, _ = build(fetch)
    assert payload["status"] == "partial"
    assert payload["error_message"] == "history: IPC timeout (-10005)"
    assert payload["error_code"] == "terminal_timeout"
    assert payload["history_cursor"] is None  # history not fetched: cursor stays
    assert payload["deals"] == [] and payload["closed_trades"] == []
    assert payload["account"] is not None and payload["open_positions"] is not None


def test_partial_when_deals_quarantined_keeps_the_rest():
    deals = [*good_deals(), deal(123, position_id=30, price=math.nan)]
    fetch = fetch_result(account=account_info(), positions=[], deals=deals)
    payload, report = build(fetch)
    assert payload["status"] == "partial"
    assert payload["error_code"] == "invalid_records"
    assert payload["error_message"] == "1 deal quarantined (ticket 123: price is NaN)"
    assert payload["history_cursor"] is None  # never past a record that was not committed
    assert len(payload["deals"]) == 4
    (q,) = payload["quarantine"]
    assert q["kind"] == "deal" and q["ticket"] == 123 and q["record"]["price"] == "nan"
    assert report.quarantined == 1 and report.quarantined_by_kind == {"deal": 1}


def test_trade_of_position_with_a_quarantined_deal_is_skipped_and_reported():
    deals = [
        deal(1, position_id=50, volume=1.0),
        deal(2, type=SELL, entry=OUT, position_id=50, volume=1.0, time=JUL + 60) | {"fee": None},
    ]
    payload, report = build(fetch_result(account=account_info(), positions=[], deals=deals))
    assert payload["closed_trades"] == []
    assert report.skipped_positions == [50]
    assert "1 trade skipped for quarantined deals (50)" in (payload["error_message"] or "")
    assert "ticket 2: fee is missing (None)" in (payload["error_message"] or "")


def test_partial_when_positions_quarantined_but_cursor_moves():
    fetch = fetch_result(account=account_info(), positions=[position(20, volume=0.0)],
                         deals=good_deals())  # fmt: skip
    payload, _ = build(fetch)
    assert payload["status"] == "partial" and payload["error_code"] == "invalid_records"
    assert "1 position quarantined (ticket 20: volume must be > 0 (got 0.0))" in (
        payload["error_message"] or ""
    )
    assert payload["open_positions"] == []
    assert payload["history_cursor"] == newest_deal_time(payload)  # deals were all fine


def test_incomplete_position_keeps_cursor_and_status_partial():
    deals = [*good_deals(), deal(99, type=SELL, entry=OUT, position_id=77, time=JUL + 500)]
    payload, report = build(fetch_result(account=account_info(), positions=[], deals=deals))
    assert payload["status"] == "partial"
    assert payload["error_code"] == "incomplete_history"
    assert payload["error_message"] == "1 position with incomplete deals (77)"
    assert payload["history_cursor"] is None
    assert report.incomplete_positions == [77]
    assert len(payload["deals"]) == 5  # the ledger still gets the deal


def test_invalid_account_is_quarantined_and_treated_as_not_fetched():
    fetch = fetch_result(account=account_info(balance=math.nan), positions=[], deals=[])
    payload, report = build(fetch)
    assert payload["account"] is None and payload["snapshot"] is None
    assert payload["status"] == "partial" and payload["error_code"] == "invalid_records"
    assert payload["error_message"] == "account info quarantined (balance is NaN)"
    assert payload["quarantine"][0]["kind"] == "account"
    assert payload["history_cursor"] == newest_deal_time(payload)
    assert report.account is False


def test_positions_not_fetched_means_none():
    fetch = fetch_result(
        account=account_info(), positions=None, deals=good_deals(),
        errors=[PartError("positions", "terminal_unavailable", "IPC send failed", -10001)],
    )  # fmt: skip
    payload, _ = build(fetch)
    assert payload["open_positions"] is None
    assert payload["status"] == "partial" and payload["error_code"] == "terminal_unavailable"
    assert payload["error_message"] == "positions: IPC send failed (-10001)"
    assert payload["history_cursor"] == newest_deal_time(payload)  # the history itself was complete


def test_account_failure_only():
    fetch = fetch_result(
        account=None, positions=[], deals=[],
        errors=[PartError("account", "terminal_unavailable", "no answer")],
    )  # fmt: skip
    payload, _ = build(fetch)
    assert payload["account"] is None and payload["snapshot"] is None
    assert payload["error_message"] == "account: no answer"
    assert payload["history_cursor"] == newest_deal_time(payload)


def test_empty_history_leaves_the_cursor():
    """No deal read, nothing to follow: the cursor stays (it follows the data, not the clock)."""
    payload, _ = build(fetch_result(account=account_info(), positions=[], deals=[]))
    assert payload["status"] == "success" and payload["history_cursor"] is None
    assert payload["deals"] == [] and payload["closed_trades"] == []


def test_history_error_with_deals_present_does_not_move_cursor():
    fetch = fetch_result(account=account_info(), positions=[], deals=good_deals(),
                         errors=[IPC_TIMEOUT])  # fmt: skip
    payload, _ = build(fetch)
    assert payload["history_cursor"] is None and payload["status"] == "partial"


def test_nothing_fetched_raises_the_first_part_error():
    fetch = fetch_result(
        account=None, positions=None, deals=None,
        errors=[
            PartError("account", "terminal_unavailable", "IPC timeout", -10005),
            PartError("history", "terminal_unavailable", "IPC timeout", -10005),
        ],
    )  # fmt: skip
    with pytest.raises(errors.SyncError) as caught:
        build(fetch)
    assert isinstance(caught.value, errors.TerminalUnavailable)
    assert caught.value.code == "terminal_unavailable"
    assert caught.value.transient is True
    assert caught.value.mt5_code == -10005
    assert "account: IPC timeout (-10005)" in caught.value.message


def test_nothing_fetched_with_auth_failure_is_not_transient():
    fetch = fetch_result(errors=[PartError("account", "auth_failed", "Authorization failed", -6)])
    with pytest.raises(errors.AuthenticationFailed) as caught:
        build(fetch)
    assert caught.value.transient is False


def test_nothing_fetched_with_unknown_code_and_without_errors():
    with pytest.raises(errors.SyncError) as caught:
        build(fetch_result(errors=[PartError("account", "weird", "boom")]))
    assert caught.value.code == "weird"
    with pytest.raises(errors.SyncError) as caught:
        build(fetch_result())
    assert caught.value.code == "nothing_fetched"


def test_unknown_time_rule_is_an_invalid_request():
    with pytest.raises(errors.InvalidRequest):
        build(fetch_result(account=account_info(), positions=[], deals=[]), time_rule="EET")


def test_cross_wired_account_raises_account_mismatch():
    fetch = fetch_result(account=account_info(login=999), positions=[], deals=[])
    with pytest.raises(errors.AccountMismatch) as caught:
        build(fetch)
    assert caught.value.transient is True


def test_error_message_is_short():
    deals = [deal(i, price=math.nan) for i in range(1, 200)]
    fetch = fetch_result(account=account_info(), positions=[], deals=deals,
                         errors=[IPC_TIMEOUT])  # fmt: skip
    payload, report = build(fetch)
    assert len(payload["error_message"] or "") <= 500
    assert (payload["error_message"] or "").startswith(
        "history: IPC timeout (-10005); 199 deals quarantined (ticket 1: price is NaN; "
    )
    assert report.quarantined == 199 and len(payload["quarantine"]) == 199


def test_fixed_time_rule_and_winter_times():
    fetch = fetch_result(account=account_info(), positions=[], deals=[deal(1, time=JUL)])
    payload, _ = build(fetch, time_rule="fixed:+2")
    assert payload["deals"][0]["time_utc"] == "2026-07-01T13:00:00+00:00"


def test_naive_datetimes_are_read_as_utc():
    payload, _ = build_commit_payload(
        fetch_result(account=account_info(), positions=[], deals=[]),
        ctx(started_at=datetime(2026, 7, 1, 12, 0)),
        completed_at=datetime(2026, 7, 1, 12, 0, 1),
    )
    assert payload["started_at"] == "2026-07-01T12:00:00+00:00"
    assert payload["duration_ms"] == 1000


def test_payload_keys_match_the_contract():
    payload, _ = build(fetch_result(account=account_info(), positions=[], deals=good_deals()))
    assert set(payload) == set(CommitPayload.__annotations__)


def test_200k_deal_backfill_payload_is_json_safe():
    fetch = fetch_result(account=account_info(), positions=[], deals=backfill(200_000))
    payload, report = build(fetch, sync_type="full", trigger="backfill")
    assert payload["status"] == "success"
    assert report.deals == 200_000 and report.trades_closed > 50_000
    assert payload["history_cursor"] == newest_deal_time(payload)


# ---------------------------------------------------------------- issue 13: cursor, ledger


def test_cursor_follows_the_newest_deal_not_the_host_clock():
    """A host clock ahead of the broker must not drag the cursor past deals not yet read."""
    three_days_ago = JUL - 3 * 86_400
    deals = [deal(1, time=three_days_ago), deal(2, time=three_days_ago + 60)]
    payload, _ = build(fetch_result(account=account_info(), positions=[], deals=deals))
    cursor = datetime.fromisoformat(payload["history_cursor"])
    assert cursor == datetime.fromisoformat(payload["deals"][1]["time_utc"])
    assert cursor < datetime.fromisoformat(FETCHED_AT) - timedelta(days=2)


def test_cursor_never_passes_now():
    """A deal stamped after the planner's now (broker clock ahead): the cursor stops at now."""
    later = [deal(1, time=JUL + 6 * 3600)]
    payload, _ = build(fetch_result(account=account_info(), positions=[], deals=later))
    assert datetime.fromisoformat(payload["deals"][0]["time_utc"]) > datetime.fromisoformat(
        FETCHED_AT
    )
    assert payload["history_cursor"] == FETCHED_AT


@pytest.mark.parametrize(("before", "expected"), [(0, {"expected_offset": 0.0}),
                                                  (12, {"expected_offset": None}),
                                                  (None, {"expected_offset": None})])
def test_ledger_check_knows_when_the_window_holds_the_whole_history(before, expected):
    fetch = fetch_result(account=account_info(), positions=[], deals=good_deals())
    fetch.deals_before_window = before
    payload, _ = build(fetch)
    assert payload["ledger"] == expected


def test_no_ledger_check_when_the_history_read_failed():
    fetch = fetch_result(account=account_info(), positions=[], deals=good_deals(),
                         errors=[IPC_TIMEOUT])  # fmt: skip
    payload, _ = build(fetch)
    assert payload["ledger"] is None
