"""PostgresStore: reads, leases, error translation and secrets, against a real PostgreSQL."""

from __future__ import annotations

import math
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from mt5_sync.errors import StoreError, StoreUnavailable, is_transient
from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import AccountRecord, PostgresStore
from mt5_sync.store.postgres import redact

from . import LOGIN, SERVER, at, commit_payload


@pytest.fixture
def store(db_url: str) -> PostgresStore:
    return PostgresStore(db_url)


def register(store: PostgresStore, login: int = LOGIN, *, active: bool = True,
             user_id: str | None = None, password: str = "gAAAA-secret-token") -> str:
    return store.register_account(
        user_id=user_id or str(uuid.uuid4()),
        login_number=login,
        broker_server=SERVER,
        broker_name="Demo Broker",
        investor_password_encrypted=password,
        server_time_rule="ny+7",
        is_active=active,
    )


# ---------------------------------------------------------------- accounts


def test_register_account_is_idempotent_and_readable(store: PostgresStore) -> None:
    user = str(uuid.uuid4())
    first = register(store, user_id=user)
    again = register(store, user_id=user, password="rotated")
    assert again == first

    record = store.get_account(first)
    assert isinstance(record, AccountRecord)
    assert (record.login_number, record.broker_server, record.user_id) == (LOGIN, SERVER, user)
    assert record.investor_password_encrypted == "rotated"
    assert record.server_time_rule == "ny+7"
    assert record.is_active and record.sync_failure_count == 0
    assert record.history_cursor is None and record.last_sync_at is None
    assert record.label == f"{LOGIN}@{SERVER}"
    assert store.get_account(str(uuid.uuid4())) is None
    assert store.get_account("not-a-uuid") is None


def test_account_record_repr_hides_the_password(store: PostgresStore) -> None:
    record = store.get_account(register(store, password="gAAAA-very-secret"))
    assert record is not None
    assert "gAAAA-very-secret" not in repr(record)
    assert "investor_password" not in repr(record)


def test_history_times_come_back_as_aware_utc(store: PostgresStore) -> None:
    account_id = register(store)
    store.commit_account_sync(commit_payload(account_id))
    record = store.get_account(account_id)
    assert record is not None
    assert record.history_cursor == at(55)
    assert record.history_cursor.utcoffset() == timedelta(0)
    assert record.last_successful_sync_at == at(60)


def test_active_accounts_least_recently_synced_first(store: PostgresStore) -> None:
    never_a, never_b = sorted([register(store, 1), register(store, 2)])
    old = register(store, 3)
    recent = register(store, 4)
    inactive = register(store, 5, active=False)
    store.fetch_all(
        "update trading_accounts set last_sync_at = case id"
        " when %s::uuid then now() - interval '1 hour' when %s::uuid then now() end"
        " where id in (%s::uuid, %s::uuid)",
        (old, recent, old, recent),
    )

    ids = [a.id for a in store.list_active_accounts()]
    assert ids == [never_a, never_b, old, recent]
    assert inactive not in ids

    chosen = store.list_active_accounts([recent, inactive, "bogus", str(uuid.uuid4()), old])
    assert [a.id for a in chosen] == [old, recent]
    assert store.list_active_accounts([]) == []
    assert store.list_active_accounts(["bogus"]) == []


# ---------------------------------------------------------------- leases


def test_lease_excludes_other_holders_until_released_or_expired(store: PostgresStore) -> None:
    account_id = register(store)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    assert store.acquire_sync_lease(account_id, first, 60)
    assert not store.acquire_sync_lease(account_id, second, 60)
    assert store.acquire_sync_lease(account_id, first, 60)  # re-entrant: extends
    store.release_sync_lease(account_id, second)  # not the holder: no-op
    assert not store.acquire_sync_lease(account_id, second, 60)
    store.release_sync_lease(account_id, first)
    assert store.acquire_sync_lease(account_id, second, 1)

    assert not store.acquire_sync_lease(account_id, first, 60)
    # One second passes for the lease of `second` (1 s TTL): rewind its expiry by its TTL
    # instead of sleeping through it.
    store.fetch_all("update trading_accounts set sync_lease_until = sync_lease_until"
                    " - interval '1 second' where id = %s", (account_id,))
    assert store.acquire_sync_lease(account_id, first, 60)
    assert not store.acquire_sync_lease(str(uuid.uuid4()), first, 60)  # unknown account


def test_lease_is_granted_to_exactly_one_of_many_racers(store: PostgresStore) -> None:
    account_id = register(store)
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        granted = store.acquire_sync_lease(account_id, str(uuid.uuid4()), 60)
        with lock:
            results.append(granted)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_invalid_lease_ttl_is_rejected(store: PostgresStore) -> None:
    with pytest.raises(StoreError, match="p_ttl_seconds must be positive"):
        store.acquire_sync_lease(register(store), str(uuid.uuid4()), 0)


# ---------------------------------------------------------------- writes through the store


def test_concurrent_commits_of_one_account_both_land(store: PostgresStore) -> None:
    account_id = register(store)
    payloads = [commit_payload(account_id, completed=at(60)),
                commit_payload(account_id, completed=at(61), cursor=at(56))]
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            store.commit_account_sync(payloads[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = store.fetch_all("select count(*) as n, max(completed_at) as last from sync_logs")
    assert rows == [{"n": 2, "last": at(61)}]
    record = store.get_account(account_id)
    assert record is not None and record.history_cursor == at(56)


def test_payload_that_is_not_json_is_refused_before_sending(store: PostgresStore) -> None:
    account_id = register(store)
    payload = commit_payload(account_id)
    payload["deals"][0]["price"] = math.nan
    with pytest.raises(StoreError, match="not valid JSON"):
        store.commit_account_sync(payload)
    assert store.fetch_all("select * from deals") == []


def test_fetch_all_returns_rows_as_dicts(store: PostgresStore) -> None:
    assert store.fetch_all("select 1 as one, %s::text as two", ("2",)) == [{"one": 1, "two": "2"}]
    assert store.fetch_all("create temp table x (a int)") == []


# ---------------------------------------------------------------- errors and secrets


def test_dead_server_is_transient_and_message_has_no_password(tmp_path: Path) -> None:
    empty = tmp_path / "nosrv"
    empty.mkdir()
    secret = "s3cr3t-Pa55word"
    store = PostgresStore(f"postgresql://postgres:{secret}@/app?host={empty}")

    with pytest.raises(StoreUnavailable) as caught:
        store.list_active_accounts()
    exc = caught.value
    assert is_transient(exc)
    assert exc.code == "database_unavailable"
    assert "database unavailable" in str(exc)
    assert secret not in str(exc) and secret not in repr(exc)
    assert exc.__cause__ is None and exc.__suppress_context__
    assert secret not in repr(store)


def test_key_value_conninfo_password_is_not_leaked(tmp_path: Path) -> None:
    secret = "kv-Secret-99"
    store = PostgresStore(f"host={tmp_path} dbname=app user=postgres password={secret}")
    with pytest.raises(StoreUnavailable) as caught:
        store.get_account(str(uuid.uuid4()))
    assert secret not in str(caught.value)
    assert secret not in repr(store)


def test_unknown_database_is_not_retried(pg: EmbeddedPostgres) -> None:
    store = PostgresStore(pg.uri("no_such_database_here"))
    with pytest.raises(StoreError) as caught:
        store.list_active_accounts()
    assert not is_transient(caught.value)
    assert caught.value.code == "database_config"


def test_statement_timeout_is_transient(db_url: str) -> None:
    store = PostgresStore(db_url, statement_timeout_s=0.1)
    with pytest.raises(StoreUnavailable, match="statement timeout"):
        store.fetch_all("select pg_sleep(2)")


def test_redact_masks_password_in_every_shape() -> None:
    conninfo = "postgresql://svc:Hunter2-xyz@db.example.com:6543/postgres"
    text = (
        "failed: postgresql://svc:Hunter2-xyz@db.example.com:6543/postgres "
        "password=Hunter2-xyz also password='quoted secret' and raw Hunter2-xyz"
    )
    masked = redact(conninfo, text)
    assert "Hunter2-xyz" not in masked
    assert "quoted secret" not in masked
    assert "svc:***@db.example.com" in masked
