"""The cycle's claim queue and the short renewed leases, over both transports.

What several hosts rely on (migration 20261203000100): two shards never claim one account, and
never wait on each other; a live holder's account is skipped, a dead holder's taken over; the
renewal keeps a lease, a lapsed one is lost; a dead sync's 'processing' row is closed as
abandoned when its account next starts, but the manual API's not-yet-started row is not.
Lapse is simulated by moving the lease's end into the past, never by sleeping.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import PostgresStore
from mt5_sync.store.factory import Store
from mt5_sync.store.supabase_rest import SupabaseRestStore
from mt5_sync.sync.leases import LeaseKeeper

from .postgrest_standin import SB_SECRET, PostgrestStandIn, seed_account

USER = "00000000-0000-4000-8000-0000000000c1"
N = 12


def account_id(i: int) -> str:
    return f"00000000-0000-4000-8000-0000000c{i:04d}"


@pytest.fixture
def db(pg: EmbeddedPostgres, migrated_template: str) -> str:
    url = pg.create_database(f"claims{uuid.uuid4().hex[:8]}", template=migrated_template,
                             drop=True)
    for i in range(N):
        seed_account(url, account_id(i), USER, 7_000_000 + i, "Claims-Demo")
    return url


@pytest.fixture(params=["postgres", "supabase"])
def store(request: pytest.FixtureRequest, db: str) -> Iterator[Store]:
    if request.param == "postgres":
        yield PostgresStore(db)
    else:
        standin = PostgrestStandIn(db)
        yield SupabaseRestStore("http://127.0.0.1:54321", SB_SECRET,
                                transport=standin.transport(), sleep=lambda _: None)


def lapse(db: str, account: str) -> None:
    PostgresStore(db).fetch_all(
        "update trading_accounts set sync_lease_until = now() - interval '1 second'"
        " where id = %s::uuid", (account,))


def started(store: Store, execution_id: str | None, account: str, holder: str | None,
            sync_id: str | None = None) -> str:
    sync_id = sync_id or str(uuid.uuid4())
    store.mark_sync_started({
        "sync_id": sync_id, "account_id": account, "execution_id": execution_id,
        "flow_run_id": None, "trigger": "scheduled", "sync_type": "incremental",
        "started_at": datetime.now(UTC).isoformat(), "lease_holder": holder,
    })
    return sync_id


def test_claims_go_least_recently_synced_first_and_each_account_once(
    store: Store, db: str
) -> None:
    PostgresStore(db).fetch_all(
        "update trading_accounts set last_sync_at = now() - make_interval(mins => (login_number"
        " - 7000000)::int)")  # account 11 synced longest ago
    cycle = str(uuid.uuid4())
    store.open_sync_cycle(cycle, "scheduled", "incremental", None)
    store.open_sync_cycle(cycle, "scheduled", "incremental", None)  # idempotent
    first = store.claim_cycle_accounts(cycle, "host-a", 5, 30)
    rest = store.claim_cycle_accounts(cycle, "host-b", 50, 30)
    assert [r["account_id"] for r in first] == [account_id(i) for i in range(11, 6, -1)]
    assert {r["outcome"] for r in first + rest} == {"claimed"}
    assert sorted(r["account_id"] for r in first + rest) == sorted(map(account_id, range(N)))
    assert store.claim_cycle_accounts(cycle, "host-c", 5, 30) == []
    assert {r["median_ms"] for r in first + rest} == {None}  # not asked for
    report = store.cycle_report(cycle)
    assert Counter(c["host"] for c in report["claims"]) == {"host-a": 5, "host-b": N - 5}


def _shard(store: Store, cycle: str, host: str, go: threading.Barrier, got: list[str],
           errors: list[BaseException]) -> None:
    try:
        go.wait()
        while rows := store.claim_cycle_accounts(cycle, host, 1, 30):
            got += [r["account_id"] for r in rows if r["outcome"] == "claimed"]
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_shards_never_share_an_account(db: str) -> None:
    for i in range(N, 200):  # enough contention for claims to cross (one found a real race)
        seed_account(db, account_id(i), USER, 7_000_000 + i, "Claims-Demo")
    stores = [PostgresStore(db) for _ in range(6)]
    for attempt in range(3):
        cycle = str(uuid.uuid4())
        stores[0].open_sync_cycle(cycle, "scheduled", "incremental", None)
        got: list[list[str]] = [[] for _ in stores]
        errors: list[BaseException] = []
        go = threading.Barrier(len(stores))
        threads = [threading.Thread(target=_shard, args=(s, cycle, f"host-{i}", go, got[i],
                                                          errors))
                   for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        claimed = [a for ids in got for a in ids]
        assert sorted(claimed) == sorted(map(account_id, range(200))), attempt
        # release for the next round
        PostgresStore(db).fetch_all("update trading_accounts set sync_lease_holder = null,"
                                    " sync_lease_until = null")


def test_a_live_holder_is_skipped_and_logged_a_dead_one_taken_over(store: Store, db: str) -> None:
    manual = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(0), manual, 30)  # a manual sync runs
    cycle = str(uuid.uuid4())
    store.open_sync_cycle(cycle, "scheduled", "incremental", [account_id(0), account_id(1)])
    rows = {r["account_id"]: r for r in store.claim_cycle_accounts(cycle, "host-a", 10, 30)}
    assert set(rows) == {account_id(0), account_id(1)}  # the set: only those two
    assert rows[account_id(0)]["outcome"] == "skipped"
    assert rows[account_id(0)]["lease_holder"] == manual
    assert rows[account_id(1)]["outcome"] == "claimed"
    [log] = PostgresStore(db).fetch_all(
        "select status, error_code, error_message from sync_logs where execution_id = %s::uuid",
        (cycle,))
    assert (log["status"], log["error_code"]) == ("skipped", "sync_in_progress")
    assert "skipped this cycle" in log["error_message"]

    # host-a dies holding account 1: nobody may take it until its lease lapses
    holder = rows[account_id(1)]["lease_holder"]
    started(store, cycle, account_id(1), holder)
    assert store.claim_cycle_accounts(cycle, "host-b", 10, 30) == []
    lapse(db, account_id(1))
    [again] = store.claim_cycle_accounts(cycle, "host-b", 10, 30)
    assert (again["account_id"], again["outcome"], again["claims"]) == (
        account_id(1), "claimed", 2)
    assert again["lease_holder"] != holder
    # once the cycle has a final row for it, it is done, lease or not
    PostgresStore(db).fetch_all(
        "update sync_logs set status = 'success' where execution_id = %s::uuid"
        " and account_id = %s::uuid", (cycle, account_id(1)))
    lapse(db, account_id(1))
    assert store.claim_cycle_accounts(cycle, "host-c", 10, 30) == []


def test_renewal_keeps_leases_and_reports_lost_ones(store: Store, db: str) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(2), a, 30)
    assert store.acquire_sync_lease(account_id(3), b, 30)
    lapse(db, account_id(3))
    assert store.acquire_sync_lease(account_id(3), "00000000-0000-4000-8000-00000000beef", 30)
    assert store.renew_sync_leases([a, b], 30) == {a}  # b lost its lease to a taker
    lease = store.sync_lease_of(account_id(2))
    assert lease is not None and lease["holder"] == a and lease["live"] is True

    keeper = LeaseKeeper(store.renew_sync_leases, 30, interval_s=3600)
    keeper.hold(a)
    keeper.hold(b)
    keeper.renew_now()
    assert keeper.held() == {a} and keeper.lost(b) and not keeper.lost(a)
    keeper.drop(a)
    assert keeper.held() == set()


def test_break_lease_only_for_the_named_holder(store: Store) -> None:
    holder = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(4), holder, 30)
    assert store.break_sync_lease(account_id(4), str(uuid.uuid4())) is False
    assert store.break_sync_lease(account_id(4), holder) is True
    lease = store.sync_lease_of(account_id(4))
    assert lease is not None and lease["holder"] is None and lease["live"] is False


def test_a_dead_sync_is_closed_as_abandoned_but_a_pending_request_is_not(
    store: Store, db: str
) -> None:
    dead_holder = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(5), dead_holder, 30)
    dead = started(store, None, account_id(5), dead_holder)
    # the manual API's row, written at request time: no lease yet, its run is still coming
    pending = started(store, None, account_id(5), None)
    lapse(db, account_id(5))
    new_holder = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(5), new_holder, 30)
    mine = started(store, None, account_id(5), new_holder)
    rows = {r["sync_id"]: r for r in PostgresStore(db).fetch_all(
        "select sync_id::text, status, error_code, details from sync_logs"
        " where account_id = %s::uuid", (account_id(5),))}
    assert (rows[dead]["status"], rows[dead]["error_code"]) == ("failed", "abandoned")
    assert rows[dead]["details"]["abandoned_for"] == mine
    assert rows[pending]["status"] == "processing"
    assert rows[mine]["status"] == "processing"
    # the lease now names the flow run of its holder (None here) and the row its holder
    [row] = PostgresStore(db).fetch_all(
        "select lease_holder::text from sync_logs where sync_id = %s::uuid", (mine,))
    assert row["lease_holder"] == new_holder


def test_a_claim_carries_the_accounts_duration_estimate(store: Store, db: str) -> None:
    """One round trip per claim: the deadline planner's estimate rides in it."""
    PostgresStore(db).fetch_all(
        "insert into sync_logs (sync_id, account_id, trigger, sync_type, status, started_at,"
        " completed_at, duration_ms) select gen_random_uuid(), %s::uuid, 'scheduled',"
        " 'incremental', 'success', now(), now(), d from unnest(array[1000, 3000, 9000]) d",
        (account_id(9),))
    cycle = str(uuid.uuid4())
    store.open_sync_cycle(cycle, "scheduled", "incremental", [account_id(9), account_id(10)])
    rows = {r["account_id"]: r for r in store.claim_cycle_accounts(
        cycle, "host-a", 10, 30, None, 5)}
    assert rows[account_id(9)]["median_ms"] == 3000
    assert rows[account_id(10)]["median_ms"] is None  # never synced


def test_deferred_accounts_are_given_back(store: Store, db: str) -> None:
    cycle = str(uuid.uuid4())
    store.open_sync_cycle(cycle, "scheduled", "incremental", [account_id(6), account_id(7)])
    rows = store.claim_cycle_accounts(cycle, "host-a", 10, 30)
    store.unclaim_cycle_accounts(cycle, [account_id(7)], "deferred")
    lease = store.sync_lease_of(account_id(7))
    assert lease is not None and lease["holder"] is None
    assert store.sync_lease_of(account_id(6))["holder"] == next(  # type: ignore[index]
        r["lease_holder"] for r in rows if r["account_id"] == account_id(6))
    outcomes = {c["account_id"]: c["outcome"] for c in store.cycle_report(cycle)["claims"]}
    assert outcomes == {account_id(6): "claimed", account_id(7): "deferred"}
    assert store.claim_cycle_accounts(cycle, "host-b", 10, 30) == []  # not offered again


def test_shard_reports_reach_the_cycle_report(store: Store) -> None:
    cycle = str(uuid.uuid4())
    store.open_sync_cycle(cycle, "scheduled", "incremental", None)
    store.record_cycle_shard(cycle, "host-a", None, None)
    report: dict[str, Any] = {"host": "host-a", "outcomes": [], "terminals": 3}
    store.record_cycle_shard(cycle, "host-a", None, report)
    [shard] = store.cycle_report(cycle)["shards"]
    assert shard["host"] == "host-a" and shard["summary"] == report
    assert shard["finished_at"] is not None


def test_a_new_holder_never_inherits_the_last_holders_flow_run(store: Store, db: str) -> None:
    """Else a waiting sync would see a finished run as the holder and break a live lease."""
    first = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(8), first, 30)
    PostgresStore(db).fetch_all(
        "update trading_accounts set sync_lease_flow_run_id = gen_random_uuid()"
        " where id = %s::uuid", (account_id(8),))  # as mt5_mark_sync_started sets it
    assert store.acquire_sync_lease(account_id(8), first, 30)  # extending keeps it
    assert store.sync_lease_of(account_id(8))["flow_run_id"] is not None  # type: ignore[index]
    lapse(db, account_id(8))
    second = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(8), second, 30)
    lease = store.sync_lease_of(account_id(8))
    assert lease is not None and lease["holder"] == second and lease["flow_run_id"] is None
    store.release_sync_lease(account_id(8), second)
    PostgresStore(db).fetch_all(
        "update trading_accounts set sync_lease_flow_run_id = gen_random_uuid()"
        " where id = %s::uuid", (account_id(8),))
    third = str(uuid.uuid4())
    assert store.acquire_sync_lease(account_id(8), third, 30)
    assert store.sync_lease_of(account_id(8))["flow_run_id"] is None  # type: ignore[index]
