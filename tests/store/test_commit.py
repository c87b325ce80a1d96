"""mt5_commit_account_sync / mt5_record_sync_failure against a real PostgreSQL.

The properties under test are the incremental-sync contract: one transaction per sync, an
idempotent merge on (account_id, ticket), a cursor that only moves forward and only with its
rows, and failures recorded separately and once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from mt5_sync.errors import StoreError, StoreUnavailable
from mt5_sync.store import PostgresStore

from . import (
    DEAL_TYPE_BUY_CANCELED,
    LOGIN,
    SERVER,
    TABLES,
    at,
    clone,
    closed_2001,
    commit_payload,
    failure_payload,
    iso,
)


@pytest.fixture
def store(db_url: str) -> PostgresStore:
    return PostgresStore(db_url)


@pytest.fixture
def account_id(store: PostgresStore) -> str:
    return store.register_account(
        user_id=str(uuid.uuid4()),
        login_number=LOGIN,
        broker_server=SERVER,
        broker_name=None,
        investor_password_encrypted="gAAAA-encrypted",
        server_time_rule="ny+7",
    )


def dump(store: PostgresStore, *, with_xmin: bool = False) -> dict[str, list[str]]:
    """Every row of every sync table as text (plus its xmin: proof a row was not rewritten)."""
    out: dict[str, list[str]] = {}
    for table, keys in TABLES.items():
        extra = ", xmin::text as xmin" if with_xmin else ""
        rows = store.fetch_all(
            f"select t::text as row{extra} from public.{table} t order by {keys}"
        )
        out[table] = [r["row"] + (f" @{r['xmin']}" if with_xmin else "") for r in rows]
    return out


def one(store: PostgresStore, sql: str, *params: Any) -> dict[str, Any]:
    rows = store.fetch_all(sql, params)
    assert len(rows) == 1, rows
    return rows[0]


def account(store: PostgresStore, account_id: str) -> dict[str, Any]:
    return one(store, "select * from trading_accounts where id = %s", account_id)


# ---------------------------------------------------------------- the happy path


def test_commit_writes_every_part(store: PostgresStore, account_id: str) -> None:
    payload = commit_payload(account_id)
    result = store.commit_account_sync(payload)

    assert result["trades_synced"] == 3
    assert result["deals_synced"] == 6
    assert result["cash_flows_synced"] == 1
    assert result["quarantined"] == 1
    assert datetime.fromisoformat(result["cursor"]) == at(55)

    acc = account(store, account_id)
    assert acc["balance"] == Decimal("10312.3")
    assert acc["equity"] == Decimal("10350")
    assert acc["margin_level"] == Decimal("6888.51913478")  # rounded to numeric(28,8)
    assert (acc["currency"], acc["leverage"], acc["margin_mode"]) == ("USD", 500, "hedging")
    assert acc["broker_name"] == "Demo Broker Ltd"  # filled from account_info.company
    assert acc["history_cursor"] == at(55)
    assert acc["last_sync_at"] == at(60)
    assert acc["last_successful_sync_at"] == at(60)
    assert acc["sync_failure_count"] == 0
    assert acc["last_connection_error"] is None
    assert acc["updated_at"] == at(60)

    trades = store.fetch_all(
        "select ticket, side, type, status, volume, close_price, net_profit, deal_count,"
        " open_time, close_time, created_at, updated_at from trades order by ticket"
    )
    assert [(t["ticket"], t["side"], t["type"], t["status"]) for t in trades] == [
        (2001, "buy", "buy", "closed"),
        (2002, "buy", "buy", "open"),
        (2003, "sell", "sell", "open"),
    ]
    closed = trades[0]
    assert closed["net_profit"] == Decimal("311.8")
    assert closed["close_price"] == Decimal("1.1032")
    assert closed["deal_count"] == 3
    assert closed["open_time"] == at(5) and closed["close_time"] == at(30)
    assert closed["created_at"] == closed["updated_at"] == at(60)

    deals = store.fetch_all("select ticket, type, entry, position_id, time from deals order by 1")
    assert [d["ticket"] for d in deals] == [1001, 1002, 1003, 1004, 1005, 1006]
    assert [d["position_id"] for d in deals if d["entry"] == 1] == [2001, 2001, 2002]
    assert deals[1]["time"] == at(5)

    cash = one(store, "select * from cash_flows")
    assert (cash["deal_ticket"], cash["kind"], cash["amount"]) == (1001, "balance", 10000)

    snap = one(store, "select * from account_snapshots")
    assert snap["taken_at"] == at(60) and snap["balance"] == Decimal("10312.3")

    quarantined = one(store, "select * from sync_quarantine")
    assert quarantined["ticket"] == 1099
    assert quarantined["kind"] == "deal"
    assert quarantined["reasons"] == "price must be > 0"
    assert quarantined["record"]["price"] == -1.0

    log = one(store, "select * from sync_logs")
    assert str(log["sync_id"]) == payload["sync_id"]
    assert str(log["execution_id"]) == payload["execution_id"]
    assert log["status"] == "success"
    assert (log["trigger"], log["sync_type"]) == ("scheduled", "incremental")
    assert (log["trades_synced"], log["deals_synced"], log["duration_ms"]) == (3, 6, 3000)
    assert log["started_at"] == at(60) - timedelta(seconds=3)
    assert log["completed_at"] == at(60)
    assert log["details"]["quarantined"] == 1
    assert log["details"]["cash_flows"] == 1
    assert log["details"]["open_positions"] == 2


def test_same_payload_twice_leaves_every_table_identical(
    store: PostgresStore, account_id: str
) -> None:
    payload = commit_payload(account_id, lease_holder=str(uuid.uuid4()))
    first = store.commit_account_sync(payload)
    before = dump(store, with_xmin=True)

    second = store.commit_account_sync(clone(payload))

    assert second == first
    # Same values and same xmin: not a single row was even rewritten.
    assert dump(store, with_xmin=True) == before


def test_replaying_an_older_payload_never_moves_cursor_or_sync_times_back(
    store: PostgresStore, account_id: str
) -> None:
    """A late retry of an older sync after a newer one landed: the cursor and times hold."""
    old = commit_payload(account_id, completed=at(60), cursor=at(55))
    store.commit_account_sync(old)
    newer = commit_payload(account_id, completed=at(120), cursor=at(115))
    newer["open_positions"] = [p for p in newer["open_positions"] or [] if p["ticket"] != 2002]
    store.commit_account_sync(newer)

    store.commit_account_sync(clone(old))

    acc = account(store, account_id)
    assert acc["history_cursor"] == at(115)
    assert acc["last_sync_at"] == at(120)
    assert acc["last_successful_sync_at"] == at(120)


# ---------------------------------------------------------------- changes after the fact


def test_changed_deal_is_updated_and_only_it(store: PostgresStore, account_id: str) -> None:
    store.commit_account_sync(commit_payload(account_id, completed=at(60)))
    later = commit_payload(account_id, completed=at(90), cursor=at(85))
    for d in later["deals"]:
        if d["ticket"] == 1002:
            d["type"] = DEAL_TYPE_BUY_CANCELED
    store.commit_account_sync(later)

    rows = {r["ticket"]: r for r in store.fetch_all("select * from deals")}
    assert rows[1002]["type"] == DEAL_TYPE_BUY_CANCELED
    assert rows[1002]["updated_at"] == at(90)
    assert rows[1002]["created_at"] == at(60)
    assert all(r["updated_at"] == at(60) for t, r in rows.items() if t != 1002)


def test_open_position_updates_then_closes(store: PostgresStore, account_id: str) -> None:
    store.commit_account_sync(commit_payload(account_id, completed=at(60)))
    later = commit_payload(account_id, completed=at(90), cursor=at(85))
    positions = later["open_positions"] or []
    positions[0]["current_price"] = 2410.0
    positions[0]["profit"] = 5.0
    positions[0]["net_profit"] = 5.0
    closed_2003 = dict(positions.pop(1))
    closed_2003.update(status="closed", close_price=1.268, close_time_utc=iso(at(80)),
                       close_time_server=1, current_price=None, deal_count=2)
    later["closed_trades"].append(closed_2003)  # type: ignore[arg-type]
    store.commit_account_sync(later)

    rows = {r["ticket"]: r for r in store.fetch_all("select * from trades")}
    assert rows[2002]["current_price"] == Decimal("2410")
    assert rows[2002]["updated_at"] == at(90)
    assert rows[2003]["status"] == "closed"
    assert rows[2003]["close_time"] == at(80)
    assert rows[2001]["updated_at"] == at(60)  # unchanged row untouched


def test_closed_trade_is_never_reopened(store: PostgresStore, account_id: str) -> None:
    store.commit_account_sync(commit_payload(account_id, completed=at(60)))
    stale = commit_payload(account_id, completed=at(90))
    stale["closed_trades"] = []
    reopened = dict(closed_2001())
    reopened.update(status="open", close_price=None, close_time_utc=None,
                    close_time_server=None, current_price=1.2)
    stale["open_positions"] = [reopened]  # type: ignore[list-item]
    store.commit_account_sync(stale)

    row = one(store, "select status, close_price, updated_at from trades where ticket = 2001")
    assert row == {"status": "closed", "close_price": Decimal("1.1032"), "updated_at": at(60)}


def test_ticket_in_both_lists_of_one_payload_keeps_the_closed_row(
    store: PostgresStore, account_id: str
) -> None:
    payload = commit_payload(account_id)
    also_open = dict(closed_2001())
    also_open.update(status="open", close_price=None, close_time_utc=None,
                     close_time_server=None)
    payload["open_positions"] = [also_open]  # type: ignore[list-item]
    payload["deals"].append(clone(payload["deals"][1]))  # a duplicated deal: last wins
    payload["deals"][-1]["comment"] = "dup"

    store.commit_account_sync(payload)

    assert one(store, "select status from trades where ticket = 2001")["status"] == "closed"
    assert one(store, "select comment from deals where ticket = 1002")["comment"] == "dup"


def test_null_open_positions_and_account_leave_stored_values(
    store: PostgresStore, account_id: str
) -> None:
    store.commit_account_sync(commit_payload(account_id, completed=at(60)))
    history_only = commit_payload(account_id, completed=at(90), cursor=at(85))
    history_only.update(account=None, snapshot=None, open_positions=None)
    result = store.commit_account_sync(history_only)

    assert result["trades_synced"] == 1
    acc = account(store, account_id)
    assert acc["balance"] == Decimal("10312.3")
    assert one(store, "select count(*) as n from trades where status = 'open'")["n"] == 2
    assert one(store, "select count(*) as n from account_snapshots")["n"] == 1
    details = one(store, "select details from sync_logs where completed_at = %s", at(90))
    assert details["details"]["open_positions"] is None


# ---------------------------------------------------------------- the cursor


def test_cursor_only_moves_forward(store: PostgresStore, account_id: str) -> None:
    def commit(minutes: float, cursor: datetime | None) -> Any:
        payload = commit_payload(account_id, completed=at(minutes), cursor=cursor)
        if cursor is None:
            payload["history_cursor"] = None
        return store.commit_account_sync(payload)["cursor"]

    assert datetime.fromisoformat(commit(60, at(55))) == at(55)
    assert datetime.fromisoformat(commit(70, at(40))) == at(55)  # older: ignored
    assert datetime.fromisoformat(commit(80, None)) == at(55)  # null: stays
    assert datetime.fromisoformat(commit(90, at(85))) == at(85)
    assert account(store, account_id)["history_cursor"] == at(85)


# ---------------------------------------------------------------- partial and failed syncs


def test_partial_commits_data_keeps_failure_count_and_sets_error(
    store: PostgresStore, account_id: str
) -> None:
    store.record_sync_failure(failure_payload(account_id, completed=at(10)))
    store.record_sync_failure(failure_payload(account_id, completed=at(20)))
    assert account(store, account_id)["sync_failure_count"] == 2

    partial = commit_payload(account_id, status="partial", completed=at(60),
                             error_message="positions: terminal timeout")
    partial["open_positions"] = None
    store.commit_account_sync(partial)

    acc = account(store, account_id)
    assert acc["sync_failure_count"] == 2
    assert acc["last_connection_error"] == "positions: terminal timeout"
    assert acc["last_successful_sync_at"] is None
    assert acc["last_sync_at"] == at(60)
    assert acc["history_cursor"] == at(55)
    assert one(store, "select count(*) as n from deals")["n"] == 6
    log = one(store, "select * from sync_logs where sync_id = %s", partial["sync_id"])
    assert (log["status"], log["error_code"]) == ("partial", "positions_failed")
    assert log["error_message"] == "positions: terminal timeout"

    store.commit_account_sync(commit_payload(account_id, completed=at(90), cursor=at(85)))
    acc = account(store, account_id)
    assert (acc["sync_failure_count"], acc["last_connection_error"]) == (0, None)
    assert acc["last_successful_sync_at"] == at(90)


def test_failing_payload_commits_nothing_then_failure_is_recorded_once(
    store: PostgresStore, account_id: str
) -> None:
    holder = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id, holder, 300)
    before = dump(store)

    bad = commit_payload(account_id, lease_holder=holder)
    bad["closed_trades"][0]["side"] = "long"  # violates trades_side_check, after deals were written
    with pytest.raises(StoreError) as caught:
        store.commit_account_sync(bad)
    assert not isinstance(caught.value, StoreUnavailable)
    assert "trades" in str(caught.value)
    assert "trades_side_check" in str(caught.value)

    assert dump(store) == before  # no deals, no cursor, no log row, lease still held

    failure = failure_payload(account_id, sync_id=bad["sync_id"], lease_holder=holder)
    store.record_sync_failure(failure)
    acc = account(store, account_id)
    assert acc["sync_failure_count"] == 1
    assert acc["last_connection_error"] == failure["error_message"]
    assert acc["last_sync_at"] == at(70)
    assert acc["history_cursor"] is None
    assert acc["sync_lease_holder"] is None  # released with the failure
    log = one(store, "select * from sync_logs where sync_id = %s", bad["sync_id"])
    assert (log["status"], log["error_code"]) == ("failed", "terminal_timeout")
    assert (log["trades_synced"], log["deals_synced"]) == (0, 0)

    after_first = dump(store, with_xmin=True)
    store.record_sync_failure(clone(failure))  # a retried report must not count twice
    assert dump(store, with_xmin=True) == after_first


def test_failure_report_after_a_landed_commit_is_ignored(
    store: PostgresStore, account_id: str
) -> None:
    """The commit landed but its reply was lost: the failure report must not undo it."""
    payload = commit_payload(account_id)
    store.commit_account_sync(payload)
    store.record_sync_failure(failure_payload(account_id, sync_id=payload["sync_id"]))

    acc = account(store, account_id)
    assert (acc["sync_failure_count"], acc["last_connection_error"]) == (0, None)
    assert one(store, "select status from sync_logs")["status"] == "success"


def test_failure_then_successful_retry_of_same_sync(store: PostgresStore, account_id: str) -> None:
    payload = commit_payload(account_id)
    store.record_sync_failure(failure_payload(account_id, sync_id=payload["sync_id"]))
    store.commit_account_sync(payload)

    log = one(store, "select status, error_code from sync_logs")
    assert log == {"status": "success", "error_code": None}
    assert account(store, account_id)["sync_failure_count"] == 0


# ---------------------------------------------------------------- keys


def test_same_tickets_in_two_accounts_keep_both_rows(store: PostgresStore, account_id: str) -> None:
    other = store.register_account(
        user_id=str(uuid.uuid4()), login_number=LOGIN, broker_server="Other-Server",
        broker_name="Other", investor_password_encrypted="x", server_time_rule="utc",
    )
    store.commit_account_sync(commit_payload(account_id))
    second = commit_payload(other)
    second["deals"][1]["price"] = 1.2
    store.commit_account_sync(second)

    for table, n in (("deals", 12), ("trades", 6), ("cash_flows", 2), ("sync_quarantine", 2)):
        assert one(store, f"select count(*) as n from {table}")["n"] == n, table
    prices = store.fetch_all(
        "select account_id::text as a, price from deals where ticket = 1002 order by price"
    )
    assert [(p["a"], p["price"]) for p in prices] == [
        (account_id, Decimal("1.1")), (other, Decimal("1.2"))
    ]


# ---------------------------------------------------------------- malformed payloads


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.pop("completed_at"), '"completed_at" is required'),
        (lambda p: p.update(sync_id="not-a-uuid"), '"sync_id" must be a UUID'),
        (lambda p: p.update(started_at="now"), '"started_at" must be an ISO 8601'),
        (lambda p: p.update(history_cursor="2026-11-02T08:00:00"), '"history_cursor"'),
        (lambda p: p.update(status="failed"), '"status" must be one of'),
        (lambda p: p.update(trigger="cron"), '"trigger" must be one of'),
        (lambda p: p.update(deals={}), '"deals" must be a JSON array'),
        (lambda p: p.pop("cash_flows"), '"cash_flows" is required'),
        (lambda p: p.update(account=[]), '"account" must be a JSON object'),
        (lambda p: p["open_positions"][0].update(status="closed"), '"open_positions"'),
        (lambda p: p["account"].update(login=999), "account.login 999 does not match"),
        (lambda p: p.update(account_id=str(uuid.uuid4())), "unknown account_id"),
        (lambda p: p["deals"][0].pop("ticket"), "deals"),
    ],
)
def test_malformed_payload_is_rejected_clearly(
    store: PostgresStore, account_id: str, mutate: Any, expected: str
) -> None:
    before = dump(store)
    payload = commit_payload(account_id)
    mutate(payload)
    with pytest.raises(StoreError) as caught:
        store.commit_account_sync(payload)
    assert not isinstance(caught.value, StoreUnavailable)
    assert expected in str(caught.value)
    assert dump(store) == before


def test_failure_payload_for_unknown_account_is_rejected(store: PostgresStore) -> None:
    with pytest.raises(StoreError, match="unknown account_id"):
        store.record_sync_failure(failure_payload(str(uuid.uuid4())))


# ---------------------------------------------------------------- start rows and leases


def test_mark_started_then_final_status_is_never_reopened(
    store: PostgresStore, account_id: str
) -> None:
    payload = commit_payload(account_id)
    entry = {k: payload[k] for k in  # type: ignore[literal-required]
             ("sync_id", "account_id", "execution_id", "flow_run_id", "trigger", "sync_type",
              "started_at")}
    entry["claim_id"] = "ignored-extra-key"
    store.mark_sync_started(entry)
    store.mark_sync_started(entry)
    log = one(store, "select status, started_at, completed_at from sync_logs")
    assert log == {"status": "processing", "started_at": datetime.fromisoformat(
        payload["started_at"]).astimezone(UTC), "completed_at": None}

    store.commit_account_sync(payload)
    store.mark_sync_started(entry)  # late duplicate
    assert one(store, "select status from sync_logs")["status"] == "success"


def test_commit_releases_only_its_own_lease(store: PostgresStore, account_id: str) -> None:
    holder = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id, holder, 300)
    store.commit_account_sync(commit_payload(account_id, lease_holder=str(uuid.uuid4())))
    assert str(account(store, account_id)["sync_lease_holder"]) == holder

    store.commit_account_sync(commit_payload(account_id, lease_holder=holder, completed=at(90)))
    acc = account(store, account_id)
    assert acc["sync_lease_holder"] is None and acc["sync_lease_until"] is None


def test_failure_turns_a_processing_row_into_failed(store: PostgresStore, account_id: str) -> None:
    failure = failure_payload(account_id)
    entry = {k: failure[k] for k in  # type: ignore[literal-required]
             ("sync_id", "account_id", "execution_id", "flow_run_id", "trigger", "sync_type",
              "started_at")}
    store.mark_sync_started(entry)
    store.record_sync_failure(failure)

    log = one(store, "select status, error_message, completed_at from sync_logs")
    assert log == {"status": "failed", "error_message": failure["error_message"],
                   "completed_at": at(70)}
    assert account(store, account_id)["sync_failure_count"] == 1
