"""The cycle claims its accounts (in-process shard): a live holder is skipped, never waited
for, and goes first next cycle; a host whose terminal paths are wrong claims nothing."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.e2e


def test_an_account_a_live_sync_holds_is_skipped_and_first_next_cycle(make_harness):
    h = make_harness(3)
    logins = [a.login for a in h.world.accounts]
    busy = h.account_ids[logins[1]]
    manual = str(uuid.uuid4())
    assert h.store.acquire_sync_lease(busy, manual, 600)  # a manual sync runs meanwhile

    summary = h.run_cycle()
    by_account = {r["account_id"]: r for r in summary["syncResults"]}
    assert by_account[busy]["status"] == "skipped"
    assert by_account[busy]["error_code"] == "sync_in_progress"
    assert "skipped this cycle" in by_account[busy]["error_message"]
    assert summary["skippedCount"] == 1 and summary["failureCount"] == 0
    assert [by_account[h.account_ids[lg]]["status"] for lg in (logins[0], logins[2])] == [
        "success", "success"]
    # one 'skipped' row, not a failure; the other syncs did not wait for the lease
    rows = h.query("select status, error_code from sync_logs where account_id = %s::uuid",
                   busy)
    assert rows == [{"status": "skipped", "error_code": "sync_in_progress"}]

    h.store.release_sync_lease(busy, manual)
    order = [a.id for a in h.store.list_active_accounts()]
    assert order[0] == busy  # never synced: first in line
    summary = h.run_cycle()
    assert {r["account_id"]: r["status"] for r in summary["syncResults"]}[busy] == "success"


def test_a_host_with_a_wrong_terminal_path_claims_nothing(make_harness, monkeypatch, tmp_path):
    from mt5_sync.settings import load_settings

    h = make_harness(2)
    real = tmp_path / "MT5-0" / "terminal64.exe"
    real.parent.mkdir()
    real.write_text("install stand-in")
    monkeypatch.setenv("MT5SYNC_TERMINAL_PATHS",
                       f"{real};{tmp_path / 'MT5-typo' / 'terminal64.exe'}")
    load_settings.cache_clear()

    summary = h.run_cycle()
    [error] = summary["hostErrors"]
    assert "MT5-typo" in error and "does not exist" in error and "-10003" in error
    # reported once for the host, not per account: no account was tried
    assert {r["status"] for r in summary["syncResults"]} == {"deferred"}
    assert {r["error_code"] for r in summary["syncResults"]} == {"unclaimed"}
    assert h.query("select count(*) as n from sync_logs where status = 'failed'")[0]["n"] == 0


async def _crashed_flow_run() -> str:
    from prefect import flow, get_client
    from prefect.states import Crashed

    @flow(name="dead-holder")
    def dead_holder() -> None: ...

    async with get_client() as client:
        run = await client.create_flow_run(dead_holder)
        await client.set_flow_run_state(run.id, Crashed(message="host died"), force=True)
        return str(run.id)


def test_the_cycle_breaks_the_lease_of_a_holder_prefect_reports_crashed(make_harness):
    import asyncio

    h = make_harness(2)
    account = h.account_ids[h.world.accounts[0].login]
    holder = str(uuid.uuid4())
    assert h.store.acquire_sync_lease(account, holder, 600)
    h.store.mark_sync_started({
        "sync_id": str(uuid.uuid4()), "account_id": account, "execution_id": None,
        "flow_run_id": asyncio.run(_crashed_flow_run()), "trigger": "scheduled",
        "sync_type": "incremental", "started_at": h.clock.now().isoformat(),
        "lease_holder": holder,
    })
    summary = h.run_cycle()
    status = {r["account_id"]: r["status"] for r in summary["syncResults"]}
    assert status[account] == "skipped"  # decided before Prefect was asked
    lease = h.store.sync_lease_of(account)
    assert lease is not None and lease["holder"] is None  # broken: free for the next claim
    assert {r["account_id"]: r["status"] for r in h.run_cycle()["syncResults"]}[account] == (
        "success")


def test_a_lease_whose_holder_prefect_reports_crashed_is_taken_over(make_harness, monkeypatch):
    """The holder's lease would last 10 minutes, the manual sync waits at most 60 s: it can
    only succeed because Prefect says the holder's flow run is over."""
    import asyncio

    from mt5_sync.settings import load_settings

    h = make_harness(1)
    login = h.world.accounts[0].login
    account = h.account_ids[login]
    monkeypatch.setenv("MT5SYNC_LEASE_WAIT_S", "60")
    load_settings.cache_clear()

    holder = str(uuid.uuid4())
    assert h.store.acquire_sync_lease(account, holder, 600)
    dead_sync = str(uuid.uuid4())
    h.store.mark_sync_started({
        "sync_id": dead_sync, "account_id": account, "execution_id": None,
        "flow_run_id": asyncio.run(_crashed_flow_run()), "trigger": "scheduled",
        "sync_type": "incremental", "started_at": h.clock.now().isoformat(),
        "lease_holder": holder,
    })
    state, outcome = h.run_account(login)
    assert state.is_completed(), outcome
    rows = {r["sync_id"]: r for r in h.query(
        "select sync_id::text, status, error_code from sync_logs where account_id = %s::uuid",
        account)}
    assert (rows[dead_sync]["status"], rows[dead_sync]["error_code"]) == ("failed", "abandoned")
