"""Per-account rules: one sync of an account at a time, cached fetches, the cycle artifact."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from mt5_sync.errors import StoreUnavailable
from mt5_sync.store.postgres import PostgresStore

pytestmark = pytest.mark.e2e


async def _task_runs(flow_run_id: str, name: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.client.schemas.sorting import TaskRunSort

    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )


def test_two_syncs_of_one_account_never_overlap(make_harness, monkeypatch):
    from mt5_sync.flows.sync_account import sync_account
    from mt5_sync.settings import load_settings

    h = make_harness(1, latency={"distribution": "fixed", "seconds": 0.3})
    monkeypatch.setenv("MT5SYNC_LEASE_WAIT_S", "60")
    load_settings.cache_clear()
    account_id = h.account_ids[h.world.accounts[0].login]

    async def both() -> list:
        return await asyncio.gather(
            *(
                sync_account(account_id=account_id, trigger=trigger, account_label=trigger,
                             return_state=True)
                for trigger in ("scheduled", "manual")
            )
        )

    states = asyncio.run(both())
    assert all(s.is_completed() for s in states)
    logs = h.query(
        "SELECT trigger, status, started_at, completed_at,"
        " (details ->> 'snapshot_taken_at')::timestamptz AS snapshot_at"
        " FROM sync_logs ORDER BY completed_at"
    )
    assert [r["status"] for r in logs] == ["success", "success"]
    first, second = logs
    # Both subflows started before either finished; the lease made the second plan its
    # snapshot (the moment its terminal work starts, taken after the claim) only after the
    # first had committed. Overlapping syncs would both snapshot before either completed.
    assert second["started_at"] < first["completed_at"]
    assert first["snapshot_at"] < first["completed_at"] < second["snapshot_at"]
    assert second["snapshot_at"] < second["completed_at"]
    leases = h.query("SELECT sync_lease_holder FROM trading_accounts")
    assert leases == [{"sync_lease_holder": None}]


def test_rerun_with_the_same_sync_id_reuses_the_cached_fetch(make_harness):
    h = make_harness(1)
    login = h.world.accounts[0].login
    sync_id = str(uuid.uuid4())
    state1, out1 = h.run_account(login, sync_id=sync_id)
    state2, out2 = h.run_account(login, sync_id=sync_id)
    assert state1.is_completed() and state2.is_completed()

    second = asyncio.run(_task_runs(out2["flow_run_id"], "fetch-account-snapshot"))
    assert [r.state.name for r in second] == ["Cached"]
    first = asyncio.run(_task_runs(out1["flow_run_id"], "fetch-account-snapshot"))
    assert [r.state.name for r in first] == ["Completed"]
    assert out1["trades_synced"] == out2["trades_synced"] > 0


def test_a_rerun_served_from_cache_claims_the_account_again(make_harness, monkeypatch):
    """The claim (lease + 'processing' row) rides in the fetch task; a rerun whose fetch is
    served from cache must still take the lease before it commits: here another sync holds
    it, so the rerun waits, gives up and commits nothing."""
    from mt5_sync.settings import load_settings

    h = make_harness(1)
    login = h.world.accounts[0].login
    account_id = h.account_ids[login]
    sync_id = str(uuid.uuid4())
    state1, _ = h.run_account(login, sync_id=sync_id)
    assert state1.is_completed()
    trades_before = h.query("SELECT count(*) AS n FROM trades")[0]["n"]
    h.query("DELETE FROM trades")  # so a commit by the rerun would show

    other = str(uuid.uuid4())
    assert h.store.acquire_sync_lease(account_id, other, 600)
    monkeypatch.setenv("MT5SYNC_LEASE_WAIT_S", "1.5")
    load_settings.cache_clear()
    state2, out2 = h.run_account(login, sync_id=sync_id)

    assert not state2.is_completed()
    assert out2["error_code"] == "sync_in_progress", out2
    fetches = asyncio.run(_task_runs(out2["flow_run_id"], "fetch-account-snapshot"))
    assert [r.state.name for r in fetches] == ["Cached"]
    assert h.query("SELECT count(*) AS n FROM trades")[0]["n"] == 0 < trades_before
    holder = h.query("SELECT sync_lease_holder::text AS h FROM trading_accounts")
    assert holder == [{"h": other}]


def test_a_retried_commit_does_not_fetch_again(make_harness, monkeypatch):
    """The first commit loses its connection (as when the database restarts); the retry
    commits the same payload without going back to the terminal."""
    h = make_harness(1)
    calls = {"commit": 0}
    real_commit = PostgresStore.commit_account_sync

    def flaky_commit(self, payload):
        calls["commit"] += 1
        if calls["commit"] == 1:
            raise StoreUnavailable("database unavailable: server closed the connection")
        return real_commit(self, payload)

    monkeypatch.setattr(PostgresStore, "commit_account_sync", flaky_commit)
    state, outcome = h.run_account(h.world.accounts[0].login)

    assert state.is_completed(), outcome
    assert calls["commit"] == 2
    fetches = asyncio.run(_task_runs(outcome["flow_run_id"], "fetch-account-snapshot"))
    commits = asyncio.run(_task_runs(outcome["flow_run_id"], "commit-account-sync"))
    assert [r.run_count for r in fetches] == [1]
    assert [r.run_count for r in commits] == [2]
    assert h.query("SELECT count(*) AS n FROM trades")[0]["n"] == outcome["trades_synced"]


def test_cycle_publishes_its_summary_as_a_table_artifact(make_harness, prefect_server):
    import httpx

    h = make_harness(2)
    summary = h.run_cycle()

    response = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={
            "artifacts": {
                "key": {"any_": ["sync-trading-data-summary"]},
                "flow_run_id": {"any_": [summary["executionId"]]},
            },
            "sort": "CREATED_DESC",
            "limit": 10,
        },
        timeout=10,
    )
    response.raise_for_status()
    [artifact] = response.json()
    assert artifact["type"] == "table"
    assert artifact["description"].startswith("2 accounts: 2 success")
    rows = json.loads(artifact["data"])
    assert sorted(r["account"] for r in rows) == sorted(a.login for a in h.world.accounts)
