"""Issue 14 end to end: the scheduled cycle backs off from broken accounts, tells a human
(Prefect events and automations on the session's server), and reports freshness.

Time moves with :meth:`SyncHarness.advance` (broker and product clocks together): the backoff
is stored in product-clock instants (each sync's completed_at) and the cycle asks the database
with the product's now, so the tests can jump hours ahead.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from mt5_sync.credentials import encrypt_password
from mt5_sync.sync.health import freshness_stats

pytestmark = pytest.mark.e2e

CYCLE = timedelta(minutes=5)


def by_login(summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["login"]: r for r in summary["syncResults"]}


def set_password(h: Any, login: int, password: str) -> None:
    """What a user changing the investor password leaves in the database: a new ciphertext
    (as ``mt5-sync encrypt-password`` prints it)."""
    h.query("UPDATE trading_accounts SET investor_password_encrypted = %s WHERE id = %s",
            encrypt_password(password, h.key), h.account_ids[login])


def attempts(h: Any, login: int) -> list[dict[str, Any]]:
    return h.query("SELECT trigger, status, error_code FROM sync_logs WHERE account_id = %s"
                   " AND status <> 'processing' ORDER BY started_at", h.account_ids[login])


def test_a_wrong_password_is_tried_once_then_waits_for_new_credentials(make_harness):
    h = make_harness(3)
    broken = h.world.accounts[0]
    set_password(h, broken.login, "not-the-password")

    first = h.run_cycle()
    assert by_login(first)[broken.login]["error_code"] == "auth_failed"
    assert first["failureCount"] == 1 and first["successCount"] == 2

    for _ in range(3):
        h.advance(CYCLE)
        summary = h.run_cycle()
        skipped = by_login(summary)[broken.login]
        assert skipped["status"] == "skipped", skipped
        assert skipped["state"] == "needs_credentials"
        assert skipped["error_code"] == "auth_failed"
        assert "update the investor password" in skipped["error_message"]
        failed_at = datetime.fromisoformat(by_login(first)[broken.login]["completed_at"])
        assert datetime.fromisoformat(skipped["next_attempt_at"]) == failed_at + timedelta(
            hours=6)
        # a backed-off account never counts as a failure again; the others go on
        assert (summary["failureCount"], summary["skippedCount"],
                summary["successCount"]) == (0, 1, 2)
        assert summary["freshness"]["states"]["needs_credentials"] == 1
    assert attempts(h, broken.login) == [
        {"trigger": "scheduled", "status": "failed", "error_code": "auth_failed"}]

    # a manual sync is never held back (and, the password still wrong, fails again)
    state, outcome = h.run_account(broken.login, trigger="manual")
    assert not state.is_completed() and outcome["error_code"] == "auth_failed"
    assert len(attempts(h, broken.login)) == 2

    # the user fixes the password: the next cycle tries the account, and it syncs
    set_password(h, broken.login, broken.password)
    h.advance(CYCLE)
    fixed = h.run_cycle()
    assert by_login(fixed)[broken.login]["status"] == "success"
    assert fixed["successCount"] == 3 and fixed["skippedCount"] == 0
    health = h.query("SELECT state, consecutive_failures FROM mt5_account_health"
                     " WHERE account_id = %s", h.account_ids[broken.login])
    assert health == [{"state": "ok", "consecutive_failures": 0}]


def test_a_dead_server_backs_off_exponentially_and_the_others_go_on(make_harness):
    dead = [{"kind": "hang", "call": "*", "times": None}]
    h = make_harness(4, faults={1: dead}, terminal_timeout_s=2.0, fetch_retries=0)
    login = h.world.accounts[1].login
    account_id = h.account_ids[login]

    def next_attempt() -> datetime:
        return h.store.account_schedule([account_id], h.clock.now())[0]["next_attempt_at"]

    # first timeout: weather, tried again next cycle; second: backs off ~5 min
    assert by_login(h.run_cycle())[login]["error_code"] == "terminal_timeout"
    h.advance(CYCLE)
    second = by_login(h.run_cycle())[login]
    assert second["status"] == "failed"
    first_wait = next_attempt() - datetime.fromisoformat(second["completed_at"])
    assert timedelta(minutes=4) <= first_wait <= timedelta(minutes=6)

    # a cycle before the next attempt: skipped, no terminal spent on it, the others synced
    h.advance(next_attempt() - h.clock.now() - timedelta(seconds=30))
    borrowed = len(h.terminal_borrows())
    summary = h.run_cycle()
    result = by_login(summary)[login]
    assert (result["status"], result["state"], result["error_code"]) == (
        "skipped", "backing_off", "terminal_timeout")
    assert "backing off after 2 failures in a row" in result["error_message"]
    assert summary["successCount"] == 3 and summary["failureCount"] == 0
    assert len(h.terminal_borrows()) - borrowed == 3

    # after it: tried again, fails, and waits about twice as long
    h.advance(timedelta(minutes=1))
    third = by_login(h.run_cycle())[login]
    assert third["status"] == "failed"
    second_wait = next_attempt() - datetime.fromisoformat(third["completed_at"])
    assert timedelta(minutes=8) <= second_wait <= timedelta(minutes=12)
    assert [a["status"] for a in attempts(h, login)] == ["failed"] * 3


def test_the_freshness_view_and_the_summary_agree(make_harness):
    h = make_harness(4, faults={2: [{"kind": "wrong_password", "call": "login", "times": None}]})
    h.run_cycle()
    h.advance(timedelta(minutes=20))
    summary = h.run_cycle()
    fresh = summary["freshness"]
    at = datetime.fromisoformat(fresh["at"])
    rows = h.store.account_freshness(at, fresh["sloS"])
    assert freshness_stats(rows, slo_s=fresh["sloS"], at=at) == fresh
    states = {r["login_number"]: r["state"] for r in rows}
    assert states[h.world.accounts[2].login] == "needs_credentials"
    # the second cycle just synced the three good accounts; the broken one never synced
    assert fresh["activeAccounts"] == 4 and fresh["neverSynced"] == 1
    assert fresh["overSlo"] == 1 and fresh["maxS"] < 120
    # percentiles as PostgreSQL computes them over the same view
    pg = h.query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY staleness_s) AS p50,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY staleness_s) AS p95,"
        " max(staleness_s) AS max FROM mt5_account_freshness_at(%s, %s)"
        " WHERE is_active", at, fresh["sloS"])[0]
    assert (fresh["p50S"], fresh["p95S"], fresh["maxS"]) == tuple(
        round(pg[k], 1) for k in ("p50", "p95", "max"))
    # the states as the view calls them appear in the summary, and in the artifact text
    assert fresh["states"] == {"needs_credentials": 1, "ok": 3}


def _wait_for_events(name: str, *, resource_id: str | None = None,
                     related_id: str | None = None) -> list[Any]:
    """Events ``name`` about ``resource_id`` (or related to ``related_id``) the server has
    stored; waits while the server's services process them (asynchronously), giving up after
    two minutes (then the caller's assertion fails)."""
    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    async def read() -> list[Any]:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[name]),
                    resource=EventResourceFilter(id=[resource_id]) if resource_id else None,
                    related=EventRelatedFilter(id=[related_id]) if related_id else None,
                ),
                limit=50,
            )
            return list(page.events)

    deadline = time.monotonic() + 120
    while True:
        found = asyncio.run(read())
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def test_events_reach_prefect_and_the_default_automations_fire(make_harness):
    from prefect import get_client

    from mt5_sync.deployments.bootstrap import AUTOMATIONS, ensure_automations

    ids = asyncio.run(ensure_automations())
    assert asyncio.run(ensure_automations()) == ids  # idempotent: matched by name

    async def count(name: str) -> int:
        async with get_client() as client:
            return len(await client.read_automations_by_name(name))

    assert [asyncio.run(count(a.name)) for a in AUTOMATIONS] == [1] * len(AUTOMATIONS)
    with pytest.raises(ValueError, match="no notification block"):
        asyncio.run(ensure_automations("slack-webhook/no-such-block"))

    h = make_harness(3)
    broken = h.world.accounts[0]
    set_password(h, broken.login, "not-the-password")
    account_resource = f"mt5.account.{h.account_ids[broken.login]}"

    first = h.run_cycle()
    assert first["eventsEmitted"] >= 1
    (alert,) = _wait_for_events("mt5.account.needs-credentials", resource_id=account_resource)
    assert alert.payload["error_code"] == "auth_failed"
    assert alert.resource["prefect.resource.name"] == f"{broken.login}@{broken.server}"
    assert "not-the-password" not in alert.model_dump_json()
    # the automation's action ran on this very event (DoNothing until a notification block
    # is plugged in: bootstrap --notify-block)
    (executed,) = _wait_for_events("prefect.automation.action.executed",
                                   related_id=f"prefect.event.{alert.id}")
    assert executed.resource["prefect.resource.id"] == (
        f"prefect.automation.{ids['mt5: account needs credentials']}")

    # no second alert while it waits; one 'recovered' once the password is fixed
    h.advance(CYCLE)
    h.run_cycle()
    set_password(h, broken.login, broken.password)
    h.advance(CYCLE)
    assert by_login(h.run_cycle())[broken.login]["status"] == "success"
    (back,) = _wait_for_events("mt5.account.recovered", resource_id=account_resource)
    assert back.payload["previous_state"] == "credentials_changed"
    assert len(_wait_for_events("mt5.account.needs-credentials",
                                resource_id=account_resource)) == 1
    (fired,) = _wait_for_events("prefect.automation.action.executed",
                                related_id=f"prefect.event.{back.id}")
    assert fired.resource["prefect.resource.id"] == (
        f"prefect.automation.{ids['mt5: account recovered']}")


def test_a_server_failing_as_a_whole_is_paused_and_said_once(make_harness, monkeypatch):
    from mt5_sync.settings import load_settings

    monkeypatch.setenv("MT5SYNC_SERVER_PAUSE_MIN_ACCOUNTS", "2")
    monkeypatch.setenv("MT5SYNC_SERVER_PAUSE_S", "600")
    down = [{"kind": "init_failure", "call": "login", "times": None}]
    # 8 accounts round-robin over 4 servers: accounts 0 and 4 share the first server
    h = make_harness(8, faults={0: down, 4: down}, fetch_retries=0)
    load_settings.cache_clear()
    server = h.world.accounts[0].server
    assert h.world.accounts[4].server == server
    logins = {h.world.accounts[i].login for i in (0, 4)}

    first = h.run_cycle()
    assert [p["broker_server"] for p in first["pausedServers"]] == [server]
    (paused,) = first["pausedServers"]
    assert (paused["accounts_failed"], paused["accounts_tried"]) == (2, 2)
    (event,) = _wait_for_events("mt5.server.paused",
                                related_id=f"prefect.flow-run.{first['executionId']}")
    assert event.resource["prefect.resource.id"] == f"mt5.server.{server}"

    h.advance(CYCLE)
    second = h.run_cycle()
    assert second["pausedServers"] == []  # said once
    for login in logins:
        result = by_login(second)[login]
        assert (result["status"], result["state"]) == ("skipped", "server_paused"), result
        assert f"server {server} paused: 2 of 2 accounts failed" in result["error_message"]
    assert second["successCount"] == 6 and second["failureCount"] == 0

    h.advance(timedelta(minutes=6))  # the pause is over: tried again
    third = h.run_cycle()
    assert {by_login(third)[login]["status"] for login in logins} == {"failed"}
