"""The seed's four scenarios and the sync's rules, end to end (real Prefect + Postgres)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mt5_sync.sync.timing import WORK_STEPS
from mt5_sync.verify import compare_with_broker, max_overlap

pytestmark = pytest.mark.e2e

WRONG_PASSWORD = [{"kind": "wrong_password", "call": "login", "times": None}]
OTP = [{"kind": "otp_required", "call": "login", "times": None}]


def table_dump(h, table: str, order: str) -> list[dict]:
    return h.query(f"SELECT * FROM {table} ORDER BY {order}")


def test_scenario_1_all_accounts_succeed(make_harness):
    h = make_harness(6)
    summary = h.run_cycle()

    assert summary["totalAccounts"] == 6
    assert summary["successCount"] == 6, summary["syncResults"]
    assert summary["failureCount"] == summary["partialCount"] == 0
    assert all(r["trades_synced"] > 0 for r in summary["syncResults"])
    report = compare_with_broker(h.store, h.world)
    assert report.accounts_checked == 6
    assert report.problems == []
    assert report.duplicate_keys == 0
    logs = h.query("SELECT status, trigger, sync_type, flow_run_id FROM sync_logs")
    assert len(logs) == 6
    assert {(r["status"], r["trigger"], r["sync_type"]) for r in logs} == {
        ("success", "scheduled", "full")
    }
    assert all(r["flow_run_id"] is not None for r in logs)
    accounts = h.query(
        "SELECT balance, equity, sync_failure_count, last_successful_sync_at, history_cursor "
        "FROM trading_accounts"
    )
    assert all(a["balance"] is not None and a["history_cursor"] is not None for a in accounts)
    assert all(a["sync_failure_count"] == 0 for a in accounts)


def test_scenario_2_some_accounts_fail_and_are_recorded(make_harness):
    h = make_harness(6, faults={1: WRONG_PASSWORD, 4: OTP})
    bad = {h.world.accounts[1].login: "auth_failed", h.world.accounts[4].login: "auth_otp_required"}

    summary = h.run_cycle()

    assert (summary["successCount"], summary["failureCount"]) == (4, 2)
    by_login = {r["login"]: r for r in summary["syncResults"]}
    for login, code in bad.items():
        result = by_login[login]
        assert result["status"] == "failed"
        assert result["error_code"] == code
        assert "Authorization failed" in result["error_message"]
        assert result["trades_synced"] == 0
    failed = h.query(
        "SELECT a.login_number, a.sync_failure_count, a.last_connection_error, l.error_message "
        "FROM trading_accounts a JOIN sync_logs l ON l.account_id = a.id "
        "WHERE l.status = 'failed'"
    )
    assert {r["login_number"] for r in failed} == set(bad)
    assert all(r["sync_failure_count"] == 1 and r["last_connection_error"] for r in failed)
    # The healthy accounts are unaffected and correct.
    assert compare_with_broker(h.store, h.world).problems == []
    # Nothing of a failed account was written.
    assert h.query(
        "SELECT count(*) AS n FROM trades t JOIN trading_accounts a ON a.id = t.account_id "
        "WHERE a.login_number = ANY(%s)", list(bad)
    )[0]["n"] == 0


def test_scenario_3_no_active_accounts(make_harness):
    h = make_harness(3, active=False)
    summary = h.run_cycle()
    assert summary["totalAccounts"] == 0
    assert summary["syncResults"] == []
    assert "No active accounts" in summary["message"]
    assert h.query("SELECT count(*) AS n FROM sync_logs")[0]["n"] == 0


def test_scenario_4_large_fleet_runs_a_sliding_window_of_ten_terminals(make_harness):
    h = make_harness(26, latency={"distribution": "lognormal", "median_s": 0.05, "sigma": 0.6})
    summary = h.run_cycle()

    assert summary["totalAccounts"] == 26
    assert summary["successCount"] == 26, [r for r in summary["syncResults"]
                                           if r["status"] != "success"]
    # Ten terminals; as many accounts again queued for them, their bookkeeping done.
    assert summary["terminals"] == 10
    assert 1 < summary["maxInFlight"] <= 20
    logs = h.query("SELECT started_at, completed_at FROM sync_logs")
    observed = max_overlap([(r["started_at"], r["completed_at"]) for r in logs])
    assert 1 < observed <= 20
    # The terminal pool's own record: never more than ten terminals in use.
    borrows = h.terminal_borrows()
    assert len(borrows) == 26
    assert 1 < max_overlap(borrows) == summary["terminalsBusyPeak"] <= 10
    assert 0 < summary["terminalsBusyMean"] <= summary["terminalsBusyPeak"]
    assert compare_with_broker(h.store, h.world).problems == []


def test_terminals_stay_capped_while_more_subflows_wait_for_them(make_harness):
    h = make_harness(12, latency={"distribution": "fixed", "seconds": 0.2})
    summary = h.run_cycle(max_concurrency=3)

    assert summary["successCount"] == 12, summary["syncResults"]
    assert summary["terminals"] == 3
    borrows = h.terminal_borrows()
    assert len(borrows) == 12 and max_overlap(borrows) <= 3
    # Six subflows in flight on three terminals: the extra ones queued, ready, for a
    # terminal (recorded per account), and their logged syncs overlap beyond three.
    logs = h.query("SELECT started_at, completed_at FROM sync_logs")
    assert 3 < max_overlap([(r["started_at"], r["completed_at"]) for r in logs]) <= 6
    waited = [r for r in summary["syncResults"] if r["timings"]["terminal_wait_ms"] > 0]
    assert len(waited) >= 3
    for r in summary["syncResults"]:  # the wait is not counted as Prefect's overhead
        t = r["timings"]  # each figure rounded to 0.1 ms in the response: up to 7 roundings
        work = sum(t.get(k, 0.0) for k in WORK_STEPS)
        assert t["prefect_ms"] == pytest.approx(max(0.0, t["slot_ms"] - work
                                                    - t["terminal_wait_ms"]), abs=0.4)


def test_same_sync_twice_leaves_the_data_identical(make_harness):
    h = make_harness(4)
    h.run_cycle(sync_type="full")
    tables = {
        "trades": "account_id, ticket",
        "deals": "account_id, ticket",
        "cash_flows": "account_id, deal_ticket",
    }
    before = {t: table_dump(h, t, o) for t, o in tables.items()}
    assert all(before[t] for t in tables)
    h.run_cycle(sync_type="full")
    after = {t: table_dump(h, t, o) for t, o in tables.items()}
    assert after == before


def test_closed_trades_follow_the_broker_as_time_passes(make_harness):
    h = make_harness(5)
    h.run_cycle()
    closed_before = h.query("SELECT count(*) AS n FROM trades WHERE status = 'closed'")[0]["n"]
    tickets_before = {r["ticket"] for r in h.query("SELECT ticket FROM trades")}
    cursors = {r["id"]: r["history_cursor"] for r in
               h.query("SELECT id, history_cursor FROM trading_accounts")}
    # The cursor follows the data: the newest deal read (not the product's clock, nor the
    # machine's date).
    newest = {r["id"]: r["t"] for r in h.query(
        "SELECT account_id AS id, max(time) AS t FROM deals GROUP BY account_id")}
    assert cursors == newest and all(c <= h.world.now_utc for c in cursors.values()), cursors

    h.advance(timedelta(hours=30))
    summary = h.run_cycle()

    assert summary["successCount"] == 5
    assert {r["sync_type"] for r in summary["syncResults"]} == {"incremental"}
    report = compare_with_broker(h.store, h.world)
    assert report.problems == []
    # Time really moved: positions closed and new ones opened since the first sync.
    closed_after = h.query("SELECT count(*) AS n FROM trades WHERE status = 'closed'")[0]["n"]
    assert closed_after > closed_before
    assert {r["ticket"] for r in h.query("SELECT ticket FROM trades")} - tickets_before
    # The cursor is again each account's newest deal: it moved for exactly the accounts with
    # a deal newer than their old cursor (an account without one in the 30 hours keeps it;
    # which accounts traded depends on the world's start date).
    after = {r["id"]: r["history_cursor"] for r in
             h.query("SELECT id, history_cursor FROM trading_accounts")}
    newest = {r["id"]: r["t"] for r in h.query(
        "SELECT account_id AS id, max(time) AS t FROM deals GROUP BY account_id")}
    assert after == newest
    moved = {i for i in after if after[i] > cursors[i]}
    assert moved == {i for i in newest if newest[i] > cursors[i]} and moved


def test_hung_terminal_does_not_stall_the_cycle(make_harness):
    hang = [{"kind": "hang", "call": "positions_get", "times": None}]
    h = make_harness(5, faults={2: hang}, terminal_timeout_s=5.0, fetch_retries=1)
    summary = h.run_cycle()

    by_login = {r["login"]: r for r in summary["syncResults"]}
    hung = by_login[h.world.accounts[2].login]
    assert hung["status"] == "failed"
    assert hung["error_code"] == "terminal_timeout"
    assert summary["successCount"] == 4
    # The hung call was cut off from outside at the configured timeout (not the default), and
    # the other accounts never waited for it: all of them finished before it gave up.
    assert "did not answer within 5s; its process was killed" in hung["error_message"]
    others = [r for r in summary["syncResults"] if r["login"] != hung["login"]]
    finished = [datetime.fromisoformat(r["completed_at"]) for r in others]
    assert max(finished) < datetime.fromisoformat(hung["completed_at"])


def test_transient_ipc_fault_is_retried_and_auth_failure_is_not(make_harness):
    flaky = [{"kind": "ipc_timeout", "call": "history_deals_get", "times": 1}]
    h = make_harness(3, faults={0: flaky, 1: WRONG_PASSWORD}, fetch_retries=2)
    summary = h.run_cycle()
    by_login = {r["login"]: r for r in summary["syncResults"]}
    assert by_login[h.world.accounts[0].login]["status"] == "success"
    assert by_login[h.world.accounts[1].login]["status"] == "failed"

    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.client.schemas.sorting import TaskRunSort

    async def fetch_attempts(flow_run_id: str) -> list[int]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(
                    name=TaskRunFilterName(like_="fetch-account-snapshot")
                ),
                sort=TaskRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
            return [r.run_count for r in runs]

    flaky_runs = asyncio.run(fetch_attempts(by_login[h.world.accounts[0].login]["flow_run_id"]))
    auth_runs = asyncio.run(fetch_attempts(by_login[h.world.accounts[1].login]["flow_run_id"]))
    assert flaky_runs == [2]
    assert auth_runs == [1]


def test_partial_sync_commits_what_was_fetched_and_holds_the_cursor(make_harness):
    broken_history = [{"kind": "ipc_timeout", "call": "history_deals_get", "times": None}]
    malformed = [{"kind": "malformed_deals", "call": "history_deals_get", "times": None}]
    h = make_harness(6, faults={1: malformed}, fetch_retries=1)
    # The account that loses its history read must have open positions to commit; which ones
    # have some depends on the date the world is built at (five candidates: at least one has).
    holders = [i for i in (0, 2, 3, 4, 5) if h.broker_open_positions(i)]
    assert holders, f"no account with open positions in a world at {h.world.now_utc}"
    broken = holders[0]
    h.set_faults(broken, broken_history)
    summary = h.run_cycle()
    by_login = {r["login"]: r for r in summary["syncResults"]}

    no_history = by_login[h.world.accounts[broken].login]
    assert no_history["status"] == "partial"
    assert "history" in no_history["error_message"]
    acc = h.query(
        "SELECT balance, history_cursor, last_connection_error, sync_failure_count "
        "FROM trading_accounts WHERE login_number = %s", h.world.accounts[broken].login
    )[0]
    assert acc["balance"] is not None            # account info was committed
    assert acc["history_cursor"] is None         # ... but the cursor did not move
    assert "history" in acc["last_connection_error"]
    open_rows = h.query(
        "SELECT count(*) AS n FROM trades t JOIN trading_accounts a ON a.id = t.account_id "
        "WHERE a.login_number = %s AND t.status = 'open'", h.world.accounts[broken].login
    )[0]["n"]
    assert open_rows == h.broker_open_positions(broken) > 0  # positions were committed

    bad_records = by_login[h.world.accounts[1].login]
    assert bad_records["status"] == "partial"
    assert "quarantined" in bad_records["error_message"]
    q = h.query("SELECT count(*) AS n FROM sync_quarantine")[0]["n"]
    assert q > 0
    assert h.query(
        "SELECT history_cursor FROM trading_accounts WHERE login_number = %s",
        h.world.accounts[1].login,
    )[0]["history_cursor"] is None


def test_dead_database_fails_clearly_without_losing_the_cycle(make_harness, monkeypatch):
    h = make_harness(2)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@/nope?host=/tmp/no-such-dir&connect_timeout=1")
    from mt5_sync.settings import load_settings

    load_settings.cache_clear()
    with pytest.raises(Exception, match=r"(?i)database"):
        h.run_cycle()
