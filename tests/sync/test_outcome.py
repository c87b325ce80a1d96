from datetime import UTC, datetime, timedelta

from mt5_sync.sync.outcome import AccountOutcome, summarize_cycle

T0 = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def outcome(status, trades=0, error=None):
    return AccountOutcome(
        account_id=f"a-{status}-{trades}",
        status=status,
        started_at=T0.isoformat(),
        completed_at=(T0 + timedelta(seconds=2)).isoformat(),
        duration_ms=2000,
        trades_synced=trades,
        error_message=error,
    )


def test_summary_has_the_edge_function_fields_and_counts():
    summary = summarize_cycle(
        [outcome("success", 3), outcome("success", 1), outcome("failed", error="boom"),
         outcome("partial", 2)],
        execution_id="e1",
        started=T0,
        finished=T0 + timedelta(milliseconds=12450),
    )
    assert summary["success"] is True
    assert (summary["totalAccounts"], summary["successCount"], summary["failureCount"],
            summary["partialCount"]) == (4, 2, 1, 1)
    assert summary["duration_ms"] == 12450
    failed = next(r for r in summary["syncResults"] if r["status"] == "failed")
    assert failed["error_message"] == "boom"
    ok = next(r for r in summary["syncResults"] if r["status"] == "success")
    assert "error_message" not in ok
    for key in ("account_id", "status", "started_at", "completed_at", "duration_ms",
                "trades_synced"):
        assert key in ok


def test_no_accounts_gives_zero_and_a_message():
    summary = summarize_cycle([], execution_id="e", started=T0, finished=T0)
    assert summary["totalAccounts"] == 0
    assert "No active accounts" in summary["message"]
