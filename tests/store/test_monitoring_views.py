"""The monitoring views (the Edge Function's four queries) return sensible rows, under RLS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from mt5_sync.store import PostgresStore

from . import LOGIN, SERVER, commit_payload, failure_payload
from .postgrest_standin import seed_account
from .test_rls import as_role

USER_A = "00000000-0000-4000-8000-0000000000aa"
USER_B = "00000000-0000-4000-8000-0000000000bb"
ACC_A = "00000000-0000-4000-8000-00000000a001"
ACC_B = "00000000-0000-4000-8000-00000000b001"
ACC_OFF = "00000000-0000-4000-8000-00000000b002"
# Whole hours ago, so every sync of the fixture falls in a known UTC hour.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


@pytest.fixture
def db(db_url: str) -> str:
    """A: 2 successes + 1 partial + 1 failure, then a success (counter reset) + one running.
    B: 1 success then 2 failures (counter 2). An inactive account with failures. A 10-day-old
    sync outside every window."""
    seed_account(db_url, ACC_A, USER_A, LOGIN, SERVER)
    seed_account(db_url, ACC_B, USER_B, LOGIN, "Other-Server")
    seed_account(db_url, ACC_OFF, USER_B, LOGIN + 1, "Other-Server", active=False)
    store = PostgresStore(db_url)

    def ok(account: str, hours: float, status: str = "success", ms: int = 3000) -> None:
        payload = commit_payload(account, completed=ago(hours), cursor=ago(hours + 0.1),
                                 status=status, error_message="positions failed"
                                 if status == "partial" else None)
        payload["duration_ms"] = ms
        store.commit_account_sync(payload)

    def fail(account: str, hours: float) -> None:
        store.record_sync_failure(failure_payload(account, completed=ago(hours)))

    ok(ACC_A, 240)  # outside the windows
    ok(ACC_A, 6, ms=1000)
    ok(ACC_A, 5, ms=2000)
    ok(ACC_A, 4, status="partial", ms=6000)
    fail(ACC_A, 3)
    ok(ACC_A, 2, ms=3000)
    store.mark_sync_started({"sync_id": str(uuid.uuid4()), "account_id": ACC_A,
                             "trigger": "manual", "sync_type": "incremental",
                             "started_at": ago(0).isoformat()})
    ok(ACC_B, 5, ms=4000)
    fail(ACC_B, 3)
    fail(ACC_B, 1)
    fail(ACC_OFF, 1)
    return db_url


def rows(db: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def test_recent_syncs(db: str) -> None:
    recent = rows(db, "select * from mt5_recent_syncs order by started_at desc")
    assert len(recent) == 10  # 11 attempts, one of them 10 days old
    latest = recent[0]
    assert (latest["account_id"], latest["status"], latest["trigger"]) == (
        uuid.UUID(ACC_A), "processing", "manual")
    assert latest["login_number"] == LOGIN and latest["broker_server"] == SERVER
    scheduled = rows(db, "select status from mt5_recent_syncs where trigger = 'scheduled'"
                         " and account_id = %s order by started_at desc limit 100", ACC_B)
    assert [r["status"] for r in scheduled] == ["failed", "failed", "success"]
    assert "investor_password_encrypted" not in latest


def test_success_rate_per_account(db: str) -> None:
    by_account = {r["account_id"]: r for r in rows(db, "select * from mt5_sync_success_rate_24h")}
    a, b = by_account[uuid.UUID(ACC_A)], by_account[uuid.UUID(ACC_B)]
    assert (a["total_syncs"], a["successes"], a["partials"], a["failures"], a["in_progress"]) == (
        6, 3, 1, 1, 1)
    assert a["success_rate_pct"] == Decimal("60.00")  # 3 of 5 finished
    assert a["avg_duration_ms"] == round((1000 + 2000 + 6000 + 30_000 + 3000) / 5)
    assert (b["total_syncs"], b["failures"], b["success_rate_pct"]) == (3, 2, Decimal("33.33"))
    assert a["last_started_at"] == ago(0)


def test_accounts_with_failures(db: str) -> None:
    failing = rows(db, "select * from mt5_accounts_with_failures order by sync_failure_count desc")
    assert [r["account_id"] for r in failing] == [uuid.UUID(ACC_B)]  # A recovered, OFF inactive
    [b] = failing
    assert b["sync_failure_count"] == 2
    assert b["last_error_code"] == "terminal_timeout"
    assert b["last_failed_at"] == ago(1)
    assert b["last_connection_error"].startswith("Failed to fetch account info")
    assert b["last_successful_sync_at"] == ago(5)


def test_performance_by_hour(db: str) -> None:
    hours = {r["hour_utc"]: r for r in rows(db, "select * from mt5_sync_performance_by_hour")}
    # finished syncs of the last 7 days, by the UTC hour they started in (3 s before the hour)
    expected: dict[int, list[int]] = {}
    for h, ms in ((6, 1000), (5, 2000), (4, 6000), (3, 30_000), (2, 3000), (5, 4000),
                  (3, 30_000), (1, 30_000), (1, 30_000)):
        started = ago(h) - timedelta(seconds=3 if ms < 30_000 else 30)
        expected.setdefault(started.hour, []).append(ms)
    assert {h: r["sync_count"] for h, r in hours.items()} == {
        h: len(v) for h, v in expected.items()}
    for hour, durations in expected.items():
        assert hours[hour]["max_duration_ms"] == max(durations)
        assert hours[hour]["avg_duration_ms"] == round(sum(durations) / len(durations))
    assert sum(r["failures"] for r in hours.values()) == 4
    assert sum(r["total_trades_synced"] for r in hours.values()) == 3 * 5


def test_views_apply_row_level_security(db: str) -> None:
    with as_role(db, "authenticated", USER_A) as conn:
        seen = {v: {r[0] for r in conn.execute(f"select account_id from {v}")}
                for v in ("mt5_recent_syncs", "mt5_sync_success_rate_24h")}
        assert seen == {"mt5_recent_syncs": {uuid.UUID(ACC_A)},
                        "mt5_sync_success_rate_24h": {uuid.UUID(ACC_A)}}
        assert conn.execute("select count(*) from mt5_accounts_with_failures").fetchone() == (0,)
        assert conn.execute("select sum(sync_count) from mt5_sync_performance_by_hour"
                            ).fetchone() == (5,)
    with as_role(db, "authenticated", USER_B) as conn:
        assert [r[0] for r in conn.execute(
            "select account_id from mt5_accounts_with_failures")] == [uuid.UUID(ACC_B)]
        assert conn.execute("select sum(sync_count) from mt5_sync_performance_by_hour"
                            ).fetchone() == (4,)
