from datetime import UTC, datetime, timedelta

from mt5_sync.servertime import ServerTimeRule
from mt5_sync.sync.window import FULL_HISTORY_FROM_UTC, plan_fetch_window

NOW = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)


def plan(**kw):
    args = dict(
        requested_type="incremental",
        history_cursor=None,
        time_rule="ny+7",
        now_utc=NOW,
        initial_history_days=30,
        overlap_hours=48,
    )
    args.update(kw)
    return plan_fetch_window(**args)


def test_never_synced_account_reads_initial_days_as_full():
    w = plan()
    assert w.sync_type == "full"
    assert w.from_utc == NOW - timedelta(days=30)


def test_incremental_rereads_overlap_before_cursor():
    cursor = NOW - timedelta(hours=1)
    w = plan(history_cursor=cursor)
    assert w.sync_type == "incremental"
    assert w.from_utc == cursor - timedelta(hours=48)


def test_full_request_ignores_cursor_and_honours_backfill_start():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    w = plan(requested_type="full", history_cursor=NOW, full_from_utc=start)
    assert (w.sync_type, w.from_utc) == ("full", start)


def test_window_is_sent_in_server_time_and_ends_a_day_ahead():
    w = plan(history_cursor=NOW)
    rule = ServerTimeRule.parse("ny+7")
    assert w.to_utc == NOW + timedelta(days=1)
    # July: New York is UTC-4, so ny+7 is UTC+3.
    assert w.date_to_server - int(w.to_utc.timestamp()) == 3 * 3600
    assert rule.to_utc(w.date_from_server) == w.from_utc


def test_a_ledger_gap_rereads_the_whole_history():
    """The missing or changed deal can be of any age (a cancelled deal keeps its old time)."""
    w = plan(history_cursor=NOW - timedelta(hours=1), ledger_gap=True)
    assert (w.sync_type, w.from_utc) == ("full", FULL_HISTORY_FROM_UTC)
