"""The plain account-health helpers: who is skipped, freshness figures, degraded reasons."""

from datetime import UTC, datetime, timedelta

from mt5_sync.sync import health
from mt5_sync.sync.outcome import AccountOutcome, summarize_cycle

T0 = datetime(2027, 7, 15, 12, 0, tzinfo=UTC)


def test_accounts_that_are_not_due_become_skipped_outcomes_in_place():
    accounts = [{"id": i, "login": n, "label": str(n)} for i, n in (("a", 1), ("b", 2), ("c", 3))]
    schedule = [
        {"account_id": "a", "due": True, "state": "failing", "reason": "ipc_timeout",
         "message": None, "next_attempt_at": None},
        {"account_id": "b", "due": False, "state": "needs_credentials", "reason": "auth_failed",
         "message": "update the investor password", "next_attempt_at": T0 + timedelta(hours=6)},
    ]  # "c" has no row: created after the schedule was read, so it is due
    due, skipped = health.split_due(accounts, schedule, now=T0, sync_type="incremental")
    assert [a["id"] for a in due] == ["a", "c"]
    item = skipped["b"].to_response()
    assert (item["status"], item["state"], item["error_code"], item["next_attempt_at"]) == (
        "skipped", "needs_credentials", "auth_failed", (T0 + timedelta(hours=6)).isoformat())
    assert item["error_message"].endswith(f"next attempt {(T0 + timedelta(hours=6)).isoformat()}")


def row(staleness, state="ok", active=True):
    return {"is_active": active, "staleness_s": staleness, "state": state}


def test_freshness_percentiles_interpolate_like_percentile_cont():
    rows = [row(float(s)) for s in (10, 20, 30, 40)] + [row(None, "stale"),
                                                        row(5000.0, "inactive", active=False)]
    stats = health.freshness_stats(rows, slo_s=35, at=T0)
    # PostgreSQL: percentile_cont(0.5) of 10,20,30,40 = 25; (0.95) = 38.5
    assert (stats["p50S"], stats["p95S"], stats["maxS"]) == (25.0, 38.5, 40.0)
    assert (stats["activeAccounts"], stats["overSlo"], stats["neverSynced"]) == (5, 2, 1)
    assert stats["states"] == {"ok": 4, "stale": 1}
    empty = health.freshness_stats([row(None, "stale")], slo_s=900, at=T0)
    assert (empty["p50S"], empty["maxS"], empty["overSlo"]) == (None, None, 1)
    assert "p50 -" in health.freshness_line(empty)


def outcome(status):
    return AccountOutcome(account_id=status, status=status, started_at=T0.isoformat(),
                          completed_at=T0.isoformat(), duration_ms=0)


def test_degraded_counts_only_the_accounts_the_cycle_tried():
    summary = summarize_cycle(
        [outcome("failed"), outcome("success"), outcome("success")]
        + [outcome("skipped")] * 5,
        execution_id="e", started=T0, finished=T0)
    fresh = {"p95S": 100.0, "sloS": 900}
    assert health.degraded_reasons(summary, fresh, failure_rate=0.5) == []
    assert health.degraded_reasons(summary, fresh, failure_rate=0.3) == [
        "1 of 3 accounts failed (over 30%)"]
    assert health.degraded_reasons(summary, {"p95S": 901.0, "sloS": 900}, failure_rate=1) == [
        "p95 staleness 901s is over the 900s SLO"]


def test_events_name_their_resource_and_carry_no_credentials():
    event = health.account_event({
        "kind": "needs-credentials", "account_id": "acc-1", "login_number": 51000001,
        "broker_server": "Sim-Live", "error_code": "auth_failed", "message": "login failed",
        "previous_state": None, "occurred_at": T0, "next_attempt_at": T0 + timedelta(hours=6),
        "sync_id": "s-1"})
    assert event["event"] == health.NEEDS_CREDENTIALS
    assert event["resource"]["prefect.resource.id"] == "mt5.account.acc-1"
    assert event["resource"]["prefect.resource.name"] == "51000001@Sim-Live"
    assert set(event["payload"]) == {"error_code", "message", "previous_state", "occurred_at",
                                     "next_attempt_at", "sync_id"}
