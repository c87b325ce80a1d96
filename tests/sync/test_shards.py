"""Merging the hosts' shard reports into one cycle (mt5_sync/sync/shards.py)."""

from __future__ import annotations

from typing import Any

from mt5_sync.sync.outcome import AccountOutcome
from mt5_sync.sync.shards import merge_cycle

NOW = "2026-12-03T12:00:00+00:00"


def outcome(account: str, status: str = "success", **kw: Any) -> dict[str, Any]:
    return AccountOutcome(account_id=account, status=status, started_at=NOW, completed_at=NOW,
                          duration_ms=5, **kw).to_dict()


def accounts(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "login": 1000 + n} for n, i in enumerate(ids)]


def test_every_account_once_in_queue_order_with_its_host() -> None:
    merged = merge_cycle(
        accounts("a1", "a2", "a3"),
        [{"host": "host-a", "outcomes": [outcome("a2"), outcome("a9")], "terminals": 3,
          "max_in_flight": 4, "terminals_busy": {"peak": 3, "mean": 2.5}, "claims": 2},
         {"host": "host-b", "outcomes": [outcome("a1", "failed", error_code="auth_failed"),
                                         outcome("a3")], "terminals": 4, "max_in_flight": 5,
          "terminals_busy": {"peak": 2, "mean": 1.0}, "claims": 2}],
        claims=[], logs=[], now_iso=NOW, sync_type="incremental",
    )
    # the list's order first, then one a shard synced that the list did not have (added
    # mid-cycle)
    assert [o.account_id for o in merged.outcomes] == ["a1", "a2", "a3", "a9"]
    assert [o.host for o in merged.outcomes] == ["host-b", "host-a", "host-b", "host-a"]
    assert (merged.terminals, merged.max_in_flight) == (7, 9)
    assert merged.terminals_busy == {"peak": 5.0, "mean": 3.5}
    assert [h["host"] for h in merged.hosts] == ["host-a", "host-b"]
    assert merged.unclaimed == [] and merged.host_errors == []


def test_a_dead_hosts_accounts_come_from_the_database() -> None:
    merged = merge_cycle(
        accounts("a1", "a2", "a3", "a4"),
        [{"host": "host-a", "outcomes": [outcome("a1")], "terminals": 3}],
        claims=[{"account_id": "a2", "host": "host-b", "outcome": "claimed"},
                {"account_id": "a3", "host": "host-b", "outcome": "claimed"}],
        logs=[{"account_id": "a2", "sync_id": "s2", "status": "processing",
               "started_at": NOW},
              {"account_id": "a2", "sync_id": "s2b", "status": "success", "started_at": NOW,
               "completed_at": NOW, "duration_ms": 9, "trades_synced": 4}],
        now_iso=NOW, sync_type="incremental",
    )
    by_id = {o.account_id: o for o in merged.outcomes}
    # a2 committed before its host died: its final row says so
    assert (by_id["a2"].status, by_id["a2"].trades_synced, by_id["a2"].host) == (
        "success", 4, "host-b")
    # a3 was claimed and never finished: the host was lost
    assert (by_id["a3"].status, by_id["a3"].error_code, by_id["a3"].host) == (
        "failed", "host_lost", "host-b")
    # a4 nobody claimed: deferred, and handed back for logging
    assert (by_id["a4"].status, by_id["a4"].error_code) == ("deferred", "unclaimed")
    assert [o.account_id for o in merged.unclaimed] == ["a4"]
    assert {"host": "host-b", "accounts": 1, "reported": False} in merged.hosts


def test_a_misconfigured_host_is_reported_once() -> None:
    merged = merge_cycle(
        accounts("a1"),
        [{"host": "host-a", "outcomes": [outcome("a1")], "terminals": 3},
         {"host": "host-x", "outcomes": [], "terminals": 0, "error": "terminal configuration "
          "error: C:/MT5/x/terminal64.exe does not exist"}],
        claims=[], logs=[], now_iso=NOW, sync_type="incremental",
    )
    assert merged.host_errors == [
        "host-x: terminal configuration error: C:/MT5/x/terminal64.exe does not exist"]
    assert [o.status for o in merged.outcomes] == ["success"]
