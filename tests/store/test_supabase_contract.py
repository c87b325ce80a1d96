"""supabase-py transport at the HTTP level, against the PostgREST stand-in on real PostgreSQL.

Two halves must meet: the requests the client sends (endpoint, headers, JSON) are captured and
checked against PostgREST's contract, and the captured RPC payloads are executed against the
real database functions, where they must write exactly what the direct path writes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from mt5_sync.errors import StoreError, StoreUnavailable
from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import PostgresStore
from mt5_sync.store.chunks import COLUMNAR_PARTS, STAGED_PARTS, columnar, plain, plan_commit
from mt5_sync.store.supabase_rest import ACCOUNT_COLUMNS, SupabaseRestStore

from . import LOGIN, SERVER, at, clone, closed_2001, commit_payload, failure_payload
from .postgrest_standin import (
    ANON_JWT,
    SB_SECRET,
    SERVICE_JWT,
    PostgrestStandIn,
    dump,
    make_jwt,
    seed_account,
    serve,
)

URL = "https://abcdefghijklmnopqrst.supabase.co"
USER = "00000000-0000-4000-8000-00000000000a"
ACCOUNT = "00000000-0000-4000-8000-0000000000a1"


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def seeded(db_url: str) -> str:
    seed_account(db_url, ACCOUNT, USER, LOGIN, SERVER)
    return db_url


@pytest.fixture
def standin(seeded: str) -> PostgrestStandIn:
    return PostgrestStandIn(seeded)


def rest(standin: PostgrestStandIn, sleeps: Sleeps, key: str = SB_SECRET,
         **kwargs: Any) -> SupabaseRestStore:
    return SupabaseRestStore(URL, key, transport=standin.transport(), sleep=sleeps, **kwargs)


def twin_db(pg: EmbeddedPostgres) -> str:
    """A second migrated database holding the same account, for direct-path comparisons."""
    url = pg.create_database(f"twin{uuid.uuid4().hex[:8]}", template="mt5_template", drop=True)
    seed_account(url, ACCOUNT, USER, LOGIN, SERVER)
    return url


# ---------------------------------------------------------------- the request contract


def test_commit_is_one_rpc_with_the_complete_payload(sleeps: Sleeps) -> None:
    capture = PostgrestStandIn(None, canned={"rpc/mt5_commit_account_sync": {"status": "success"}})
    store = rest(capture, sleeps, key=SERVICE_JWT)
    payload = commit_payload(ACCOUNT)

    assert store.commit_account_sync(payload) == {"status": "success"}

    [req] = capture.requests
    assert (req.method, req.path, req.params) == (
        "POST", "/rest/v1/rpc/mt5_commit_account_sync", [])
    # the rows travel column by column (chunks.columnar); everything else as given
    sent, given = req.body["p"], json.loads(json.dumps(payload))
    assert sent == columnar(given)
    for part in COLUMNAR_PARTS:
        assert sent[part]["rows"] == len(given[part])
        assert set(sent[part]["columns"]) == set(given[part][0])
    assert {k: v for k, v in sent.items() if k not in COLUMNAR_PARTS} == {
        k: v for k, v in given.items() if k not in COLUMNAR_PARTS}
    assert req.headers["apikey"] == SERVICE_JWT
    assert req.headers["authorization"] == f"Bearer {SERVICE_JWT}"  # a JWT key: both headers
    assert req.headers["content-type"] == "application/json"
    assert req.headers["content-profile"] == "public"
    assert "return=representation" not in req.prefer


def test_secret_key_travels_only_in_apikey(sleeps: Sleeps) -> None:
    """sb_secret_ keys are not JWTs: PostgREST answers PGRST301 to them as a bearer token."""
    capture = PostgrestStandIn(None)
    rest(capture, sleeps).release_sync_lease(ACCOUNT, str(uuid.uuid4()))
    [req] = capture.requests
    assert req.headers["apikey"] == SB_SECRET
    assert "authorization" not in req.headers


def test_plain_supabase_py_sends_the_secret_key_as_bearer_and_is_rejected(
    standin: PostgrestStandIn,
) -> None:
    """The reason for the header hook: without it the same key fails (local PostgREST/CLI)."""
    from supabase import Client, ClientOptions

    client = Client(URL, SB_SECRET, ClientOptions(
        httpx_client=httpx.Client(transport=standin.transport()), postgrest_client_retry=False))
    with pytest.raises(Exception, match="PGRST301"):
        client.table("trading_accounts").select("id").execute()


def test_reads_select_named_columns_and_page_by_id(standin: PostgrestStandIn, sleeps: Sleeps,
                                                   seeded: str) -> None:
    ids = [f"00000000-0000-4000-8000-0000000000b{i}" for i in range(5)]
    for i, account_id in enumerate(ids):
        seed_account(seeded, account_id, USER, LOGIN + 1 + i, SERVER, active=i != 3)
    standin.max_rows = 2  # a project with a lower max-rows cap than our page size
    store = rest(standin, sleeps)

    accounts = store.list_active_accounts()

    assert [a.id for a in accounts] == sorted([ACCOUNT, *ids[:3], ids[4]])
    assert all(a.investor_password_encrypted == "gAAAA-enc" for a in accounts)
    gets = [r for r in standin.requests if r.method == "GET"]
    assert len(gets) == 4  # 2 + 2 + 1 rows, then an empty page
    assert gets[0].param("select") == ",".join(ACCOUNT_COLUMNS)
    assert gets[0].param("is_active") == "eq.true"
    assert gets[0].param("order") == "id.asc"
    assert gets[1].param("id") == f"gt.{accounts[1].id}"
    assert store.list_active_accounts([ids[0], ids[3], "nope"]) == [accounts[1]]
    assert store.get_account(ids[3]) is not None and store.get_account(ids[3]).is_active is False  # type: ignore[union-attr]
    assert store.get_account(str(uuid.uuid4())) is None
    assert store.get_account("not-a-uuid") is None


def test_reads_order_least_recently_synced_first(standin: PostgrestStandIn, sleeps: Sleeps,
                                                 seeded: str) -> None:
    other = "00000000-0000-4000-8000-0000000000c1"
    seed_account(seeded, other, USER, LOGIN + 50, SERVER)
    PostgresStore(seeded).commit_account_sync(commit_payload(ACCOUNT))
    rest_order = [a.id for a in rest(standin, sleeps).list_active_accounts()]
    assert rest_order == [a.id for a in PostgresStore(seeded).list_active_accounts()]
    assert rest_order == [other, ACCOUNT]


# ---------------------------------------------------------------- both halves meet


def test_captured_rpc_payload_writes_what_the_direct_path_writes(
    sleeps: Sleeps, seeded: str, pg: EmbeddedPostgres
) -> None:
    capture = PostgrestStandIn(None)
    payload = commit_payload(ACCOUNT)
    rest(capture, sleeps).commit_account_sync(clone(payload))
    [body] = capture.rpc_bodies("mt5_commit_account_sync")

    # Execute the captured body on the real function, as the role PostgREST would use.
    with psycopg.connect(seeded) as conn:
        conn.execute("set local role service_role")
        via_rest = conn.execute("select public.mt5_commit_account_sync(%s)",
                                (Jsonb(body["p"]),)).fetchone()
    direct_db = twin_db(pg)
    via_direct = PostgresStore(direct_db).commit_account_sync(payload)

    assert via_rest is not None and via_rest[0] == via_direct
    assert dump(seeded) == dump(direct_db)


def test_full_sync_round_trip_through_the_standin(standin: PostgrestStandIn, sleeps: Sleeps,
                                                  seeded: str) -> None:
    store = rest(standin, sleeps)
    holder, other = str(uuid.uuid4()), str(uuid.uuid4())
    payload = commit_payload(ACCOUNT, lease_holder=holder)

    assert store.acquire_sync_lease(ACCOUNT, holder, 60) is True
    assert store.acquire_sync_lease(ACCOUNT, other, 60) is False
    store.mark_sync_started({**payload, "ignored": 1})
    result = store.commit_account_sync(payload)
    assert result["trades_synced"] == 3 and result["status"] == "success"
    assert store.acquire_sync_lease(ACCOUNT, other, 60) is True  # the commit released it
    store.release_sync_lease(ACCOUNT, other)
    store.record_sync_failure(failure_payload(ACCOUNT))

    record = store.get_account(ACCOUNT)
    assert record is not None and record.history_cursor == at(55)
    assert record.sync_failure_count == 1
    rows = dump(seeded)
    assert len(rows["trades"]) == 3 and len(rows["sync_logs"]) == 2
    assert [r.path.rsplit("/", 1)[-1] for r in standin.requests if r.method == "POST"] == [
        "mt5_acquire_sync_lease", "mt5_acquire_sync_lease", "mt5_mark_sync_started",
        "mt5_commit_account_sync", "mt5_acquire_sync_lease", "mt5_release_sync_lease",
        "mt5_record_sync_failure"]


# ---------------------------------------------------------------- chunked commits


def test_big_commit_is_staged_in_bounded_chunks_and_committed_once(
    standin: PostgrestStandIn, sleeps: Sleeps, seeded: str, pg: EmbeddedPostgres
) -> None:
    payload = commit_payload(ACCOUNT)
    limit = 1500
    result = rest(standin, sleeps, chunk_bytes=limit).commit_account_sync(clone(payload))

    stages = [r for r in standin.requests if r.path == "/rest/v1/sync_commit_chunks"]
    assert len(stages) > len(STAGED_PARTS)  # deals alone need several chunks
    for req in stages:
        assert req.method == "POST"
        assert {"return=minimal", "resolution=merge-duplicates"} <= req.prefer
        assert req.param("on_conflict") == "sync_id,part,seq"
        [row] = req.body
        assert set(row) == {"sync_id", "part", "seq", "account_id", "row_count", "rows"}
        assert row["row_count"] == len(row["rows"])
        assert len(json.dumps(row["rows"], separators=(",", ":"))) <= limit
    [final] = standin.rpc_bodies("mt5_commit_staged_account_sync")
    assert all(final["p"][part] == [] for part in final["p"]["staged"])
    assert final["p"]["staged"]["deals"] == {"chunks": sum(
        1 for r in stages if r.body[0]["part"] == "deals"), "rows": 6}
    assert standin.rpc_bodies("mt5_commit_account_sync") == []

    direct_db = twin_db(pg)
    assert result == PostgresStore(direct_db).commit_account_sync(payload)
    assert dump(seeded) == dump(direct_db)  # incl. an empty staging table


def test_staged_commit_is_atomic_until_the_final_call(standin: PostgrestStandIn, sleeps: Sleeps,
                                                      seeded: str) -> None:
    store = rest(standin, sleeps, chunk_bytes=1500, max_attempts=2)
    payload = commit_payload(ACCOUNT)
    n_stage = len(plan_commit(plain(payload), 1500).chunks)

    # every chunk lands, then the final call fails on every attempt: nothing may be visible
    def final_fails(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("mt5_commit_staged_account_sync"):
            return httpx.Response(503, json={"message": "upstream unavailable"})
        return standin.handle(request)

    flaky = SupabaseRestStore(URL, SB_SECRET, transport=httpx.MockTransport(final_fails),
                              sleep=sleeps, chunk_bytes=1500, max_attempts=2)
    with pytest.raises(StoreUnavailable):
        flaky.commit_account_sync(clone(payload))
    rows = dump(seeded)
    assert rows["trades"] == rows["deals"] == rows["sync_logs"] == []
    assert len(rows["sync_commit_chunks"]) == n_stage
    assert store.get_account(ACCOUNT).history_cursor is None  # type: ignore[union-attr]

    store.commit_account_sync(clone(payload))  # the retry re-stages (idempotent) and commits
    rows = dump(seeded)
    assert len(rows["trades"]) == 3 and rows["sync_commit_chunks"] == []
    assert store.get_account(ACCOUNT).history_cursor == at(55)  # type: ignore[union-attr]


def test_bad_row_in_a_late_chunk_rolls_back_everything(standin: PostgrestStandIn,
                                                       sleeps: Sleeps, seeded: str) -> None:
    payload = commit_payload(ACCOUNT)
    bad = closed_2001()
    bad["ticket"], bad["side"] = 2999, "long"  # violates trades_side_check
    payload["closed_trades"].append(bad)
    with pytest.raises(StoreError, match="23514") as caught:
        rest(standin, sleeps, chunk_bytes=1500).commit_account_sync(payload)
    assert not caught.value.transient
    assert len(standin.rpc_bodies("mt5_commit_staged_account_sync")) == 1  # not retried
    rows = dump(seeded)
    assert rows["deals"] == rows["trades"] == rows["sync_logs"] == []
    assert PostgresStore(seeded).get_account(ACCOUNT).history_cursor is None  # type: ignore[union-attr]


def test_lost_reply_of_the_final_call_is_replayed_from_the_log(
    standin: PostgrestStandIn, sleeps: Sleeps, seeded: str, pg: EmbeddedPostgres
) -> None:
    payload = commit_payload(ACCOUNT)

    def lose_first_final(request: httpx.Request, _seen: list[int] = []) -> httpx.Response:  # noqa: B006
        response = standin.handle(request)
        if request.url.path.endswith("mt5_commit_staged_account_sync") and not _seen:
            _seen.append(1)
            raise httpx.ReadError("connection reset after the commit", request=request)
        return response

    lossy = SupabaseRestStore(URL, SB_SECRET, transport=httpx.MockTransport(lose_first_final),
                              sleep=sleeps, chunk_bytes=1500)
    result = lossy.commit_account_sync(clone(payload))

    finals = standin.rpc_bodies("mt5_commit_staged_account_sync")
    assert len(finals) == 2 and finals[0] == finals[1]  # the retry re-sent the same call
    assert len(sleeps) == 1
    direct_db = twin_db(pg)
    assert result == PostgresStore(direct_db).commit_account_sync(payload)
    assert dump(seeded) == dump(direct_db)


def test_missing_chunks_are_staged_again(standin: PostgrestStandIn, sleeps: Sleeps,
                                         seeded: str) -> None:
    store = rest(standin, sleeps, chunk_bytes=1500)
    original = store._stage
    calls: list[int] = []

    def stage_then_lose_one(plan: Any) -> None:
        original(plan)
        calls.append(1)
        if len(calls) == 1:
            with psycopg.connect(seeded) as conn:
                conn.execute("delete from sync_commit_chunks where part = 'deals' and seq = 0")

    store._stage = stage_then_lose_one  # type: ignore[method-assign]
    result = store.commit_account_sync(commit_payload(ACCOUNT))
    assert result["deals_synced"] == 6 and len(calls) == 2
    assert len(dump(seeded)["deals"]) == 6


def test_failure_record_drops_staged_chunks(standin: PostgrestStandIn, sleeps: Sleeps,
                                            seeded: str) -> None:
    payload = commit_payload(ACCOUNT)
    with psycopg.connect(seeded) as conn:
        conn.execute("insert into sync_commit_chunks (sync_id, part, seq, account_id, row_count,"
                     " rows) values (%s, 'deals', 0, %s, 1, '[{}]')", (payload["sync_id"], ACCOUNT))
    rest(standin, sleeps).record_sync_failure(failure_payload(ACCOUNT, sync_id=payload["sync_id"]))
    delete = standin.requests[-1]
    assert (delete.method, delete.param("sync_id")) == ("DELETE", f"eq.{payload['sync_id']}")
    assert "return=minimal" in delete.prefer
    assert dump(seeded)["sync_commit_chunks"] == []


# ---------------------------------------------------------------- retries and errors


def test_5xx_and_network_errors_are_retried_with_growing_backoff(
    standin: PostgrestStandIn, sleeps: Sleeps
) -> None:
    standin.fail_next(2, status=503)
    standin.fail_next(1, error=httpx.ConnectError)
    store = rest(standin, sleeps, max_attempts=4, retry_backoff_s=0.4)
    assert store.commit_account_sync(commit_payload(ACCOUNT))["status"] == "success"
    bodies = standin.rpc_bodies("mt5_commit_account_sync")
    assert len(bodies) == 4 and all(b == bodies[0] for b in bodies)
    assert len(sleeps) == 3
    assert 0.2 <= sleeps[0] <= 0.4 and 0.4 <= sleeps[1] <= 0.8 and 0.8 <= sleeps[2] <= 1.6


def test_retries_give_up_as_transient(standin: PostgrestStandIn, sleeps: Sleeps) -> None:
    standin.fail_next(3, status=502)
    with pytest.raises(StoreUnavailable) as caught:
        rest(standin, sleeps, max_attempts=3).mark_sync_started(commit_payload(ACCOUNT))
    assert caught.value.transient and len(standin.requests) == 3


@pytest.mark.parametrize(("status", "code", "transient"), [
    (500, "40001", True),   # serialization failure
    (500, "57014", True),   # statement timeout
    (429, None, True),      # rate limited by the gateway
    (500, "XX000", False),  # internal error: same answer next time
    (500, "55000", False),
])
def test_which_5xx_are_retried(standin: PostgrestStandIn, sleeps: Sleeps, status: int,
                               code: str | None, transient: bool) -> None:
    standin.fail_next(2, status=status, code=code)
    store = rest(standin, sleeps, max_attempts=2)
    with pytest.raises((StoreError, StoreUnavailable)) as caught:
        store.release_sync_lease(ACCOUNT, str(uuid.uuid4()))
    assert caught.value.transient is transient
    assert len(standin.requests) == (2 if transient else 1)


def test_rejected_payload_is_not_retried(standin: PostgrestStandIn, sleeps: Sleeps) -> None:
    payload = commit_payload(ACCOUNT)
    payload["trigger"] = "hourly"
    with pytest.raises(StoreError, match=r"\[22023\].*trigger") as caught:
        rest(standin, sleeps).commit_account_sync(payload)
    assert not caught.value.transient and len(standin.requests) == 1 and not sleeps


def test_unknown_account_is_a_conflict_not_retried(standin: PostgrestStandIn,
                                                   sleeps: Sleeps) -> None:
    with pytest.raises(StoreError, match="23503"):
        rest(standin, sleeps).commit_account_sync(commit_payload(str(uuid.uuid4())))
    assert len(standin.requests) == 1


@pytest.mark.parametrize("key", [ANON_JWT, make_jwt("service_role", exp=1)])
def test_wrong_keys_fail_clearly(standin: PostgrestStandIn, sleeps: Sleeps, key: str) -> None:
    with pytest.raises(StoreError) as caught:
        rest(standin, sleeps, key=key).list_active_accounts()
    assert caught.value.code == "database_auth_failed" and not caught.value.transient
    assert key not in str(caught.value)


def test_missing_function_points_at_the_migrations(standin: PostgrestStandIn, sleeps: Sleeps,
                                                   seeded: str) -> None:
    with psycopg.connect(seeded) as conn:
        conn.execute("drop function public.mt5_release_sync_lease(uuid, uuid) cascade")
    with pytest.raises(StoreError, match=r"PGRST202.*supabase db push") as caught:
        rest(standin, sleeps).release_sync_lease(ACCOUNT, str(uuid.uuid4()))
    assert caught.value.code == "database_config"


def test_nan_never_leaves_the_process(sleeps: Sleeps) -> None:
    capture = PostgrestStandIn(None)
    payload = commit_payload(ACCOUNT)
    payload["deals"][0]["price"] = float("nan")
    with pytest.raises(StoreError, match="not valid JSON"):
        rest(capture, sleeps).commit_account_sync(payload)
    assert capture.requests == []


# ---------------------------------------------------------------- real sockets


def test_real_http11_server_with_timeout_and_dropped_connection(standin: PostgrestStandIn,
                                                                sleeps: Sleeps) -> None:
    with serve(standin) as base:
        store = SupabaseRestStore(base, SB_SECRET, sleep=sleeps, timeout_s=5)
        standin.fail_next(1, error=httpx.ReadError)  # the server closes the socket
        assert store.commit_account_sync(commit_payload(ACCOUNT))["status"] == "success"
        assert {r.http_version for r in standin.requests} == {"HTTP/1.1"}
        assert len(standin.requests) == 2 and len(sleeps) == 1
        store.close()
    with serve(standin, delay_s=0.6) as base:
        slow = SupabaseRestStore(base, SB_SECRET, sleep=sleeps, timeout_s=0.2, max_attempts=2)
        with pytest.raises(StoreUnavailable, match="ReadTimeout"):
            slow.get_account(ACCOUNT)  # each 0.6 s answer is cut off at the 0.2 s timeout
        assert len(sleeps) == 2  # ... and tried twice in all: one backoff between attempts
        slow.close()


def test_user_jwt_over_http_sees_only_its_own_rows(standin: PostgrestStandIn,
                                                   seeded: str) -> None:
    """RLS through the Data API: a signed-in user's client, not the service key."""
    from supabase import Client, ClientOptions

    other_user, other_account = str(uuid.uuid4()), str(uuid.uuid4())
    seed_account(seeded, other_account, other_user, LOGIN, "Other-Server")
    direct = PostgresStore(seeded)
    direct.commit_account_sync(commit_payload(ACCOUNT))
    token = make_jwt("authenticated", sub=USER, aud="authenticated")
    client = Client(URL, ANON_JWT, ClientOptions(
        headers={"Authorization": f"Bearer {token}"},
        httpx_client=httpx.Client(transport=standin.transport()), postgrest_client_retry=False))

    accounts: list[Any] = client.table("trading_accounts").select("id,login_number").execute().data
    trades: list[Any] = client.table("trades").select("account_id,ticket").execute().data
    assert [a["id"] for a in accounts] == [ACCOUNT]
    assert {t["account_id"] for t in trades} == {ACCOUNT} and len(trades) == 3
    with pytest.raises(Exception, match="42501"):
        client.table("trading_accounts").select("investor_password_encrypted").execute()
