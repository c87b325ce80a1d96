"""The cycle's deadline: the planner (plain) and the flow deferring what cannot finish (e2e)."""

from __future__ import annotations

import re

import pytest

from mt5_sync.sync.deadline import DEFAULT_OVERHEAD_S, DeadlinePlanner


def test_no_budget_admits_everything() -> None:
    planner = DeadlinePlanner(budget_s=0, default_s=1e9)
    assert planner.admit("a", elapsed_s=1e6) is None


def test_history_estimate_plus_observed_overhead() -> None:
    planner = DeadlinePlanner(budget_s=100, history_ms={"a": 4000}, default_s=10)
    assert planner.estimate_s("a") == pytest.approx(4 + DEFAULT_OVERHEAD_S)
    planner.observe(slot_s=3.0, logged_duration_s=2.0)  # 1.0 s the log row did not see
    planner.observe(slot_s=5.0, logged_duration_s=2.0)  # 3.0 s
    assert planner.estimate_s("a") == pytest.approx(4 + 2.0)
    # an account without history: the cycle's running mean slot time
    assert planner.estimate_s("b") == pytest.approx(4.0)


def test_defers_only_what_would_end_after_the_budget() -> None:
    planner = DeadlinePlanner(budget_s=60, history_ms={"slow": 30_000, "fast": 1_000}, default_s=5)
    assert planner.admit("fast", elapsed_s=0) is None
    assert planner.admit("slow", elapsed_s=20) is None
    assert planner.admit("slow", elapsed_s=40) == pytest.approx(30 + DEFAULT_OVERHEAD_S)
    assert planner.admit("fast", elapsed_s=40) is None  # a shorter one still fits
    assert planner.admit("new", elapsed_s=54) is None  # default 5 s: ends at 59
    assert planner.admit("new", elapsed_s=56) == pytest.approx(5)
    assert "60s cycle budget" in planner.deferral_message(5, 56)


def test_first_account_of_a_cycle_always_starts() -> None:
    """Progress every cycle; an account longer than the whole budget is not starved."""
    planner = DeadlinePlanner(budget_s=60, history_ms={"huge": 400_000}, default_s=5)
    assert planner.admit("huge", elapsed_s=2) is None
    assert planner.admit("huge", elapsed_s=2) is not None


DEFERRAL = re.compile(
    r"expected ~([\d.]+)s would end after the ([\d.]+)s cycle budget \(([\d.]+)s elapsed\)"
)


@pytest.mark.e2e
def test_cycle_defers_what_cannot_finish_and_syncs_it_first_next_cycle(make_harness, monkeypatch):
    from mt5_sync.settings import load_settings

    # 10 accounts of >= 1 s on 2 slots cannot all fit in 4 s: some are deferred; the first
    # account always starts, so some are synced however slow the host is.
    h = make_harness(10, login_delay_sampler=lambda rng: 1.0)
    monkeypatch.setenv("MT5SYNC_DEFAULT_ACCOUNT_ESTIMATE_S", "1.0")
    load_settings.cache_clear()
    budget = 4.0

    first = h.run_cycle(max_concurrency=2, cycle_budget_s=budget)

    results = first["syncResults"]
    deferred = [r for r in results if r["status"] == "deferred"]
    synced = [r for r in results if r["status"] != "deferred"]
    assert first["totalAccounts"] == 10
    assert deferred and synced, [(r["status"], r["duration_ms"]) for r in results]
    assert all(r["status"] == "success" for r in synced)
    assert first["deferredCount"] == len(deferred)
    assert first["failureCount"] == 0  # deferred is not failed
    assert all(r["error_code"] == "deadline" and "budget" in r["error_message"] for r in deferred)
    # Each deferral was the planner's rule, as recorded: elapsed + estimate past the budget
    # (both printed to 0.1 s, so their sum can read up to 0.1 s low).
    for r in deferred:
        estimate, said_budget, elapsed = map(float, DEFERRAL.search(r["error_message"]).groups())
        assert said_budget == budget and elapsed + estimate > budget - 0.1, r["error_message"]

    # One 'deferred' log row per deferred account; their accounts were not touched.
    rows = h.query(
        "SELECT account_id::text AS account_id, status, error_code, duration_ms "
        "FROM sync_logs WHERE status = 'deferred'"
    )
    assert {r["account_id"] for r in rows} == {r["account_id"] for r in deferred}
    assert all(r["error_code"] == "deadline" and r["duration_ms"] == 0 for r in rows)
    untouched = h.query(
        "SELECT last_sync_at, sync_failure_count, history_cursor FROM trading_accounts "
        "WHERE id::text = ANY(%s)",
        [r["account_id"] for r in deferred],
    )
    assert all(
        a["last_sync_at"] is None and a["sync_failure_count"] == 0 and a["history_cursor"] is None
        for a in untouched
    )

    # Next cycle: the deferred accounts are the first ones started (least recently synced).
    second = h.run_cycle(max_concurrency=2, cycle_budget_s=0)
    order = [r["account_id"] for r in second["syncResults"]]
    assert set(order[: len(deferred)]) == {r["account_id"] for r in deferred}
    assert second["successCount"] == 10 and second["deferredCount"] == 0


@pytest.mark.e2e
def test_durations_from_history_feed_the_next_cycles_estimates(make_harness):
    """A cycle reads each account's recent durations (mt5_sync_duration_estimates)."""
    import asyncio

    from mt5_sync.tasks.database import load_duration_estimates

    h = make_harness(3, login_delay_sampler=lambda rng: 0.3)
    h.run_cycle(cycle_budget_s=0)
    ids = list(h.account_ids.values())

    estimates = asyncio.run(load_duration_estimates.fn(ids, 5))

    assert set(estimates) == set(ids)
    assert all(300 <= ms < 30_000 for ms in estimates.values())
