"""Account health on real PostgreSQL: the sync_logs trigger, the backoff policy, the
credentials-change trigger, server pauses, the freshness function and view, RLS.

Outcomes are written the way the pipeline writes them (``mt5_record_sync_failure``, or a plain
``sync_logs`` row for a success: the trigger only looks at sync_logs). Every instant is chosen
by the test and handed to the ``*_at`` functions, as the product hands them its clock.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mt5_sync.store import PostgresStore

from .postgrest_standin import seed_account
from .test_rls import as_role

T0 = datetime(2027, 3, 16, 12, 0, tzinfo=UTC)
USER_A = "00000000-0000-4000-8000-0000000000aa"
USER_B = "00000000-0000-4000-8000-0000000000bb"
ACC = "00000000-0000-4000-8000-00000000a001"
OTHER = "00000000-0000-4000-8000-00000000b001"


@pytest.fixture
def store(db_url: str) -> PostgresStore:
    seed_account(db_url, ACC, USER_A, 51000001, "Sim-Live")
    seed_account(db_url, OTHER, USER_B, 51000002, "Sim-Live")
    return PostgresStore(db_url)


def fail(store: PostgresStore, at: datetime, code: str = "auth_failed",
         account: str = ACC, *, execution_id: str | None = None, trigger: str = "scheduled",
         sync_id: str | None = None) -> str:
    sync_id = sync_id or str(uuid.uuid4())
    store.record_sync_failure({  # type: ignore[typeddict-item]
        "sync_id": sync_id, "account_id": account, "execution_id": execution_id,
        "flow_run_id": None, "trigger": trigger, "sync_type": "incremental",
        "error_code": code, "error_message": f"login failed ({code})",
        "started_at": (at - timedelta(seconds=2)).isoformat(), "completed_at": at.isoformat(),
        "duration_ms": 2000, "lease_holder": None,
    })
    return sync_id


def succeed(store: PostgresStore, at: datetime, account: str = ACC,
            execution_id: str | None = None) -> None:
    store.fetch_all(
        "insert into sync_logs (sync_id, account_id, execution_id, trigger, sync_type, status,"
        " started_at, completed_at, duration_ms) values (%s, %s, %s, 'scheduled',"
        " 'incremental', 'success', %s, %s, 1000)",
        (str(uuid.uuid4()), account, execution_id, at - timedelta(seconds=1), at),
    )
    store.fetch_all("update trading_accounts set last_successful_sync_at = %s where id = %s",
                    (at, account))


def schedule(store: PostgresStore, at: datetime, account: str = ACC) -> dict[str, Any]:
    return store.account_schedule([account], at)[0]


def test_a_wrong_password_waits_for_new_credentials(store: PostgresStore) -> None:
    fail(store, T0)
    s = schedule(store, T0 + timedelta(hours=1))
    assert (s["state"], s["reason"], s["due"]) == ("needs_credentials", "auth_failed", False)
    assert s["next_attempt_at"] == T0 + timedelta(hours=6)
    assert "investor password" in s["message"]
    assert schedule(store, T0 + timedelta(hours=6))["due"]  # the long backoff has passed
    assert schedule(store, T0, OTHER)["due"]  # the other account is not affected
    # tried again after 6 h and still wrong: 24 h, and no second alert
    fail(store, T0 + timedelta(hours=6), "auth_otp_required")
    s = schedule(store, T0 + timedelta(hours=7))
    assert s["next_attempt_at"] == T0 + timedelta(hours=30) and not s["due"]
    events = store.take_health_events()
    assert [(e["kind"], e["error_code"]) for e in events] == [("needs-credentials", "auth_failed")]
    assert events[0]["login_number"] == 51000001 and store.take_health_events() == []
    # the same ciphertext written again changes nothing; a new one lifts the wait at once
    store.fetch_all("update trading_accounts set investor_password_encrypted ="
                    " investor_password_encrypted where id = %s", (ACC,))
    assert not schedule(store, T0 + timedelta(hours=7))["due"]
    store.fetch_all("update trading_accounts set investor_password_encrypted = 'gAAAA-new'"
                    " where id = %s", (ACC,))
    s = schedule(store, T0 + timedelta(hours=7))
    assert (s["state"], s["due"], s["next_attempt_at"]) == ("credentials_changed", True, None)
    succeed(store, T0 + timedelta(hours=7, minutes=5))
    assert schedule(store, T0 + timedelta(hours=7, minutes=6))["state"] == "ok"
    (recovered,) = store.take_health_events()
    assert (recovered["kind"], recovered["previous_state"]) == ("recovered", "credentials_changed")


def test_transient_failures_back_off_exponentially_with_jitter(store: PostgresStore) -> None:
    at = T0
    fail(store, at, "terminal_timeout")
    assert schedule(store, at) | {"message": None} == {
        "account_id": ACC, "state": "failing", "reason": "terminal_timeout", "message": None,
        "next_attempt_at": None, "due": True}
    delays = []
    for _ in range(8):
        at += timedelta(hours=2)
        fail(store, at, "ipc_timeout")
        s = schedule(store, at)
        assert s["state"] == "backing_off" and not s["due"]
        delays.append((s["next_attempt_at"] - at).total_seconds())
        assert schedule(store, s["next_attempt_at"])["due"]
    # failure n >= 2 waits 5 min * 2^(n-2), capped at 1 h, each within +-20 %
    for n, delay in enumerate(delays, start=2):
        base = min(3600, 300 * 2 ** (n - 2))
        assert 0.8 * base <= delay <= 1.2 * base, (n, delay)
    assert len(set(delays)) == len(delays)  # jittered, not the bare doubling
    assert store.take_health_events() == []  # backing off alone pages no one
    succeed(store, at + timedelta(hours=2))
    (recovered,) = store.take_health_events()
    assert recovered["previous_state"] == "backing_off"
    other_kind = fail(store, at + timedelta(hours=3), "database_error")
    assert schedule(store, at + timedelta(hours=3))["due"]  # not the broker's fault: no backoff
    assert other_kind


def test_a_replayed_or_late_outcome_counts_once(store: PostgresStore) -> None:
    sync_id = fail(store, T0, "ipc_timeout")
    fail(store, T0 + timedelta(minutes=5), "ipc_timeout")
    first = schedule(store, T0 + timedelta(minutes=5))
    fail(store, T0 + timedelta(minutes=5), "ipc_timeout", sync_id=sync_id)  # a replay
    store.fetch_all("update sync_logs set status = 'failed' where sync_id = %s", (sync_id,))
    assert schedule(store, T0 + timedelta(minutes=5)) == first
    # a sync that finished before the latest outcome (a slow manual one) changes nothing
    fail(store, T0 - timedelta(minutes=1), "auth_failed", trigger="manual")
    assert schedule(store, T0 + timedelta(minutes=5)) == first
    assert store.fetch_all("select consecutive_failures from mt5_account_health")[0][
        "consecutive_failures"] == 2


def test_a_server_failing_as_a_whole_is_paused_once(db_url: str) -> None:
    store = PostgresStore(db_url)
    ids = [f"00000000-0000-4000-8000-0000000c000{i}" for i in range(5)]
    for i, account in enumerate(ids):
        seed_account(db_url, account, USER_A, 52000000 + i, "Down-Server" if i < 4 else "Up")
    execution = str(uuid.uuid4())
    for account in ids[:3]:
        fail(store, T0, "ipc_timeout", account, execution_id=execution)
    succeed(store, T0, ids[3], execution)
    succeed(store, T0, ids[4], execution)
    entry = {"execution_id": execution, "now": T0.isoformat(), "min_accounts": 3,
             "ratio": 0.75, "pause_s": 600}
    (paused,) = store.pause_failing_servers(entry)
    assert paused == {"broker_server": "Down-Server", "error_code": "ipc_timeout",
                      "accounts_failed": 3, "accounts_tried": 4,
                      "paused_until": T0 + timedelta(minutes=10)}
    assert store.pause_failing_servers(entry) == []  # said once
    rows = {r["account_id"]: r for r in store.account_schedule(None, T0 + timedelta(minutes=1))}
    assert [rows[a]["state"] for a in ids] == ["server_paused"] * 4 + ["ok"]
    assert not rows[ids[3]]["due"] and rows[ids[4]]["due"]
    assert "3 of 4 accounts failed with ipc_timeout" in rows[ids[3]]["message"]
    assert all(r["due"] for r in store.account_schedule(None, T0 + timedelta(minutes=10)))
    # 3 of 4 is below a 0.8 ratio: no pause
    entry |= {"ratio": 0.8, "now": (T0 + timedelta(minutes=20)).isoformat()}
    assert store.pause_failing_servers(entry) == []


def test_freshness_states_and_the_view(store: PostgresStore, db_url: str) -> None:
    seed_account(db_url, "00000000-0000-4000-8000-00000000c0ff", USER_A, 51000009, "Sim-Live",
                 active=False)
    succeed(store, T0, OTHER)
    now = T0 + timedelta(minutes=10)
    rows = {r["login_number"]: r for r in store.account_freshness(now, 900)}
    assert rows[51000002]["staleness_s"] == 600 and rows[51000002]["state"] == "ok"
    assert rows[51000001]["staleness_s"] is None and rows[51000001]["state"] == "stale"
    assert rows[51000009]["state"] == "inactive"
    assert {r["login_number"]: r["state"] for r in store.account_freshness(now, 300)}[
        51000002] == "stale"
    fail(store, T0, "auth_failed")
    assert {r["login_number"]: r["state"] for r in store.account_freshness(now, 900)}[
        51000001] == "needs_credentials"
    # the view is the function at the database's now() (T0 is a date of the test's choosing)
    store.fetch_all("update trading_accounts set last_successful_sync_at = now() - interval"
                    " '1 hour' where id = %s", (OTHER,))
    view = store.fetch_all("select login_number, state, staleness_s from mt5_account_freshness"
                           " order by login_number")
    assert [(r["login_number"], r["state"]) for r in view] == [
        (51000001, "needs_credentials"), (51000002, "stale"), (51000009, "inactive")]
    assert 3600 <= view[1]["staleness_s"] < 3660


def test_health_follows_row_level_security(store: PostgresStore, db_url: str) -> None:
    fail(store, T0, "auth_failed")
    fail(store, T0, "auth_failed", OTHER)
    for view in ("mt5_account_freshness", "mt5_account_schedule", "mt5_account_health"):
        with as_role(db_url, "authenticated", USER_A) as conn:
            seen = {str(r[0]) for r in conn.execute(f"select account_id from {view}")}
            assert seen == {ACC}, view
        with as_role(db_url, "anon") as conn, pytest.raises(Exception, match="permission"):
            conn.execute(f"select * from {view}")
    with as_role(db_url, "authenticated", USER_A) as conn, pytest.raises(
        Exception, match="permission denied"
    ):
        conn.execute("select * from mt5_take_health_events(10)")
