"""Both transports leave identical database contents for the same simulated syncs.

Payloads come from the real pipeline pieces: the simulated MetaTrader5 module driven through
the project's terminal adapter, then ``build_commit_payload``. The same sequence of store calls
(lease, started, commit, a second overlapping sync, a failure) runs once over the direct psycopg
path and once over supabase-py against the PostgREST stand-in; every table must match row for
row. Full histories are several MB, so the REST side also exercises chunked staging.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mt5_sync.contracts import CommitPayload, Credentials, FetchRequest
from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import PostgresStore
from mt5_sync.store.chunks import encode, plain, plan_commit
from mt5_sync.store.factory import Store
from mt5_sync.store.supabase_rest import SupabaseRestStore

from .postgrest_standin import SB_SECRET, PostgrestStandIn, dump, seed_account

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
USER = "00000000-0000-4000-8000-0000000000e2"
EXECUTION = "00000000-0000-4000-8000-0000000000e3"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Three accounts (hedging/netting, three server time rules): two fetches each, the second
    an overlapping incremental window, as raw FetchResults + the account's time rule."""
    from mt5_sync.mt5sim.world import WORLD_ENV, build_world

    # seed 11 at 6-10 trades/day: one full history of 1.24 MB (above the default chunk size)
    world = build_world(3, seed=11, now_utc=NOW, trades_per_day=(6.0, 10.0))
    path = world.save(Path(tmp_path_factory.mktemp("sim")) / "world.json")
    mp = pytest.MonkeyPatch()
    mp.setenv(WORLD_ENV, str(path))
    import mt5_sync.mt5sim as mt5
    from mt5_sync.terminal.session import TerminalSession

    session = TerminalSession(mt5)
    accounts = []
    until = int((NOW + timedelta(days=2)).timestamp())
    for i, spec in enumerate(world.accounts):
        creds = Credentials(spec.login, spec.server, spec.password)
        account_id = f"00000000-0000-4000-8000-00000000f00{i}"
        full = session.fetch(FetchRequest(account_id, creds, 0, until))
        recent = session.fetch(FetchRequest(account_id, creds, until - 9 * 86_400, until))
        account = {"id": account_id, "login": spec.login, "server": spec.server,
                   "rule": spec.time_rule, "fetches": [full, recent]}
        account["payloads"] = payloads(account)
        accounts.append(account)
    yield accounts
    session.reset()
    mp.undo()


def payloads(account: dict[str, Any]) -> list[CommitPayload]:
    from mt5_sync.transform.payload import SyncContext, build_commit_payload

    out = []
    for n, fetch in enumerate(account["fetches"]):
        started = NOW + timedelta(minutes=5 * n)
        ctx = SyncContext(
            sync_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account['id']}/{n}")),
            account_id=account["id"], execution_id=None, flow_run_id=None,
            trigger="scheduled", sync_type="full" if n == 0 else "incremental",
            started_at=started, time_rule=account["rule"],
            lease_holder=str(uuid.uuid5(uuid.NAMESPACE_URL, f"holder/{n}")))
        payload, _ = build_commit_payload(fetch, ctx, completed_at=started + timedelta(seconds=4))
        out.append(payload)
    return out


def run_syncs(store: Store, accounts: list[dict[str, Any]]) -> list[Any]:
    results: list[Any] = []
    for account in accounts:
        for payload in copy.deepcopy(account["payloads"]):
            holder = payload["lease_holder"] or ""
            assert store.acquire_sync_lease(account["id"], holder, 600)
            store.mark_sync_started(dict(payload))
            results.append(store.commit_account_sync(payload))
        failed = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account['id']}/failed"))
        code = "auth_failed" if account is accounts[0] else "terminal_timeout"
        store.record_sync_failure({
            "sync_id": failed, "account_id": account["id"], "execution_id": EXECUTION,
            "flow_run_id": None, "trigger": "manual", "sync_type": "incremental",
            "error_code": code, "error_message": f"failed: {code}",
            "started_at": (NOW + timedelta(hours=1)).isoformat(),
            "completed_at": (NOW + timedelta(hours=1, seconds=30)).isoformat(),
            "duration_ms": 30_000, "lease_holder": None})
    results.append([a.id for a in store.list_active_accounts()])
    # account health (the trigger on sync_logs wrote it): the same answers either way
    results.append(store.account_schedule(None, NOW + timedelta(hours=2)))
    results.append(store.account_schedule([accounts[0]["id"], "not-a-uuid"],
                                          NOW + timedelta(hours=2)))
    results.append(store.account_freshness(NOW + timedelta(hours=2), 900))
    results.append(store.pause_failing_servers({
        "execution_id": EXECUTION, "now": (NOW + timedelta(hours=2)).isoformat(),
        "min_accounts": 1, "ratio": 0.5, "pause_s": 600}))
    results.append(store.take_health_events(10))
    return results


def fresh_db(pg: EmbeddedPostgres, accounts: list[dict[str, Any]]) -> str:
    url = pg.create_database(f"par{uuid.uuid4().hex[:8]}", template="mt5_template", drop=True)
    for a in accounts:
        seed_account(url, a["id"], USER, a["login"], a["server"], rule=a["rule"])
    return url


@pytest.mark.parametrize("chunk_bytes", [400_000, 40_000])
def test_both_transports_write_identical_rows(
    pg: EmbeddedPostgres, migrated_template: str, simulated: list[dict[str, Any]],
    chunk_bytes: int,
) -> None:
    direct_db, rest_db = fresh_db(pg, simulated), fresh_db(pg, simulated)
    standin = PostgrestStandIn(rest_db)
    rest = SupabaseRestStore("http://127.0.0.1:54321", SB_SECRET, chunk_bytes=chunk_bytes,
                             transport=standin.transport(), sleep=lambda _: None)

    via_direct = run_syncs(PostgresStore(direct_db), simulated)
    via_rest = run_syncs(rest, simulated)

    assert via_rest == via_direct
    health = via_direct[-5:]
    assert [r["state"] for r in health[0]] == ["needs_credentials", "failing", "failing"]
    assert len(health[1]) == 1 and len(health[3]) == 2  # two servers paused
    assert [e["kind"] for e in health[4]] == ["needs-credentials"]
    direct_rows, rest_rows = dump(direct_db), dump(rest_db)
    assert direct_rows == rest_rows
    assert rest_rows["sync_commit_chunks"] == []
    assert len(direct_rows["deals"]) > 4000 and len(direct_rows["trades"]) > 1500
    # a full history was too big for one request (staged), smaller syncs went directly,
    # and no request body exceeded the limit
    sizes = [len(encode(r.body)) for r in standin.requests if r.body is not None]
    assert max(sizes) <= chunk_bytes
    staged = [plan_commit(plain(p), chunk_bytes).staged
              for a in simulated for p in a["payloads"]]
    assert 1 <= sum(staged) == len(standin.rpc_bodies("mt5_commit_staged_account_sync"))
    assert len(staged) - sum(staged) == len(standin.rpc_bodies("mt5_commit_account_sync"))


# ---------------------------------------------------------------- the real flows, either path

TRADE_COLUMNS = (
    "account_id, ticket, symbol, side, status, volume, open_price, open_time, open_time_server,"
    " close_price, close_time, close_time_server, current_price, profit, swap, commission, fee,"
    " net_profit, magic, comment, deal_count"
)


@pytest.mark.e2e
def test_a_cycle_over_either_transport_writes_the_same_trades(
    pg: EmbeddedPostgres, migrated_template: str, prefect_server: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's acceptance check: switching a cycle from the direct path to supabase-py
    (against the PostgREST stand-in over real HTTP) produces the same trades rows."""
    import asyncio

    import psycopg
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_LEVEL, temporary_settings

    from mt5_sync import clock
    from mt5_sync.credentials import encrypt_password, generate_key
    from mt5_sync.flows.sync_trading_data import sync_trading_data
    from mt5_sync.mt5sim.world import WORLD_ENV, build_world
    from mt5_sync.settings import load_settings
    from mt5_sync.tasks import runtime
    from mt5_sync.terminal.pool import close_all_pools

    from .postgrest_standin import serve

    world = build_world(3, seed=5, now_utc=NOW, timeline_start_utc=NOW - timedelta(days=20),
                        state_dir=str(tmp_path / "sim-state"))
    key = generate_key()
    secrets = {s.login: encrypt_password(s.password, key) for s in world.accounts}
    accounts: list[dict[str, Any]] = [
        {"id": f"00000000-0000-4000-8000-00000000e00{i}", "login": s.login, "server": s.server,
         "rule": s.time_rule} for i, s in enumerate(world.accounts)]
    direct_db, rest_db = fresh_db(pg, []), fresh_db(pg, [])
    for url in (direct_db, rest_db):
        for a in accounts:
            seed_account(url, a["id"], USER, a["login"], a["server"], rule=a["rule"],
                         password=secrets[a["login"]])
    monkeypatch.setenv("MT5SYNC_CREDENTIALS_KEY", key)
    monkeypatch.setenv(WORLD_ENV, str(world.save(tmp_path / "world.json")))
    monkeypatch.setenv("MT5SYNC_TERMINAL_BACKEND", "simulated")

    def cycle() -> dict[str, Any]:
        load_settings.cache_clear()
        runtime.close_stores()
        # the product's clock starts where the simulated broker's is pinned (any real date)
        with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url,
                                         PREFECT_LOGGING_LEVEL: "WARNING"}), \
                clock.driven_by(clock.RunningClock(NOW)):
            return asyncio.run(sync_trading_data())

    try:
        monkeypatch.setenv("DATABASE_URL", direct_db)
        direct = cycle()
        monkeypatch.delenv("DATABASE_URL")
        standin = PostgrestStandIn(rest_db)
        with serve(standin) as base:
            monkeypatch.setenv("SUPABASE_URL", base)
            monkeypatch.setenv("SUPABASE_SECRET_KEY", SB_SECRET)
            monkeypatch.setenv("MT5SYNC_SUPABASE_CHUNK_BYTES", "20000")  # stage the histories
            via_rest = cycle()
    finally:
        close_all_pools()
        load_settings.cache_clear()
        runtime.close_stores()

    assert direct["successCount"] == via_rest["successCount"] == 3
    query = f"select {TRADE_COLUMNS} from trades order by account_id, ticket"
    with psycopg.connect(direct_db) as one, psycopg.connect(rest_db) as two:
        direct_trades, rest_trades = one.execute(query).fetchall(), two.execute(query).fetchall()
    assert len(direct_trades) > 20 and rest_trades == direct_trades
    assert standin.rpc_bodies("mt5_commit_staged_account_sync")  # histories went in chunks
    assert {r.http_version for r in standin.requests} == {"HTTP/1.1"}
