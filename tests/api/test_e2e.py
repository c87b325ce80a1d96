"""End to end on real servers: HTTP request -> real Prefect server -> the ``manual-sync``
deployment served by a Runner subprocess -> the real ``sync-account`` flow against the
simulated MT5 world -> ``sync_logs`` row with that sync_id -> the status endpoint.

Also: Prefect taken away (a TCP proxy stops) -> 503 with the slot given back, and a retry a
once it is back succeeds; the event path (``mt5.sync.requested`` + deployment trigger); and a
manual sync that arrives while another sync of the account holds its lease waits for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mt5_sync.credentials import encrypt_password, generate_key
from mt5_sync.localstack import EmbeddedPostgres, PrefectServer, prefect_client_env
from mt5_sync.mt5sim.world import build_world
from mt5_sync.store.postgres import PostgresStore
from tests.api.conftest import USER_A, auth_headers
from tests.api.support import JwksServer, Keys, ServedApp, ToggleProxy, api_settings, served

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "sync-account/manual-sync"
FINAL = {"success", "partial", "failed"}


@dataclass
class World:
    db_url: str
    store: PostgresStore
    account_ids: list[str]
    prefect: PrefectServer
    proxy: ToggleProxy


@pytest.fixture(scope="module")
def world(
    pg: EmbeddedPostgres, migrated_template: str, prefect_server: PrefectServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("api-e2e")
    db_url = pg.create_database("api_e2e", template=migrated_template, drop=True)
    # The API and the worker run the product in other processes, on the machine's clock: the
    # simulated broker's clock is pinned at the real now, so both agree on any date.
    now = datetime.now(UTC).replace(microsecond=0)
    sim = build_world(4, seed=7, now_utc=now, timeline_start_utc=now - timedelta(days=20),
                      state_dir=str(tmp / "sim-state"))
    world_path = sim.save(tmp / "world.json")
    key = generate_key()
    store = PostgresStore(db_url)
    store.ensure_user(USER_A, "e2e-api@example.com")
    ids = [store.register_account(
        user_id=USER_A, login_number=s.login, broker_server=s.server, broker_name=s.company,
        investor_password_encrypted=encrypt_password(s.password, key),
        server_time_rule=s.time_rule) for s in sim.accounts]
    env = prefect_client_env(tmp / "prefect-home")
    env.update({
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "DATABASE_URL": db_url,
        "MT5SYNC_CREDENTIALS_KEY": key,
        "MT5SIM_WORLD": str(world_path),
        "MT5SYNC_TERMINAL_BACKEND": "simulated",
        "MT5SYNC_SIMULATED_SLOTS": "2",
        "MT5SYNC_LEASE_WAIT_S": "90",
        "MT5SYNC_RETRY_BACKOFF_S": "0.2",
        "PYTHONPATH": str(REPO_ROOT),
    })
    log = (tmp / "runner.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "serve_manual_sync.py")],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_for_deployment(prefect_server.api_url, runner, tmp / "runner.log")
        proxy = ToggleProxy(int(prefect_server.api_url.split(":")[-1].split("/")[0]))
        yield World(db_url, store, ids, prefect_server, proxy)
        proxy.down()
    finally:
        os.killpg(runner.pid, 15)
        try:
            runner.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, 9)
            runner.wait(5)
        log.close()


def _wait_for_deployment(api_url: str, runner: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if runner.poll() is not None:
            raise RuntimeError(f"runner exited: {log.read_text(errors='replace')[-3000:]}")
        if httpx.get(f"{api_url}/deployments/name/{DEPLOYMENT}").status_code == 200:
            return
        time.sleep(0.5)
    raise TimeoutError(f"deployment not served: {log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def app(world: World, jwks: JwksServer) -> Iterator[ServedApp]:
    proxied = f"http://127.0.0.1:{world.proxy.port}/api"
    with served(api_settings(world.db_url, jwks_url=jwks.url, prefect_api_url=proxied,
                             prefect_timeout_s=2.0)) as server:
        yield server


def _post(url: str, keys: Keys, account_id: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/api/mt5/account/{account_id}/sync",
                      headers=auth_headers(keys.token(USER_A, alg="ES256")), json=body,
                      timeout=60)


def _wait_final(url: str, keys: Keys, sync_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/api/mt5/sync/{sync_id}",
                           headers=auth_headers(keys.token(USER_A)), timeout=30)
        assert status.status_code == 200, status.text
        if status.json()["status"] in FINAL:
            return dict(status.json())
        time.sleep(0.5)
    raise TimeoutError(f"sync {sync_id} not finished after {timeout_s}s")


def _wait_task_running(world: World, flow_run_id: str, task: str, timeout_s: float = 120) -> None:
    """Poll the Prefect API until a task run named ``task-...`` of the flow run is Running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = httpx.post(f"{world.prefect.api_url}/task_runs/filter", json={
            "flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=30).json()
        if any(r["name"].startswith(task) and r["state"]["type"] == "RUNNING" for r in runs):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no running {task} task in flow run {flow_run_id} after {timeout_s}s")


def _flow_run(world: World, flow_run_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{world.prefect.api_url}/flow_runs/{flow_run_id}").json())


def test_request_runs_the_deployment_and_status_shows_the_finished_sync(
    world: World, app: ServedApp, keys: Keys,
) -> None:
    account_id = world.account_ids[0]
    accepted = _post(app.url, keys, account_id, sync_type="full", history_days=30)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["flow_run_id"]
    final = _wait_final(app.url, keys, body["sync_id"])
    assert final["status"] == "success", final
    assert final["trigger"] == "manual" and final["sync_type"] == "full"
    assert final["trades_synced"] > 0 and final["duration_ms"] > 0
    assert final["completed_at"] is not None and final["error_message"] is None
    assert final["flow_run_id"] == body["flow_run_id"]
    [row] = world.store.fetch_all(
        "select sync_id::text, trigger, status, flow_run_id::text from sync_logs"
        " where account_id = %s", (account_id,))
    assert row == {"sync_id": body["sync_id"], "trigger": "manual", "status": "success",
                   "flow_run_id": body["flow_run_id"]}
    run = _flow_run(world, body["flow_run_id"])
    assert run["idempotency_key"] == body["sync_id"]
    assert run["parameters"]["sync_id"] == body["sync_id"]
    assert run["parameters"]["trigger"] == "manual"
    # The data really arrived.
    trades = world.store.fetch_all("select count(*) as n from trades where account_id = %s",
                                   (account_id,))
    assert trades[0]["n"] == final["trades_synced"]


def test_prefect_down_gives_503_and_a_retry_once_it_is_back_succeeds(
    world: World, app: ServedApp, keys: Keys,
) -> None:
    account_id = world.account_ids[1]
    world.proxy.down()
    try:
        down = _post(app.url, keys, account_id)
    finally:
        world.proxy.up()
    assert down.status_code == 503, down.text
    assert "unavailable" in down.json()["detail"]
    slot = world.store.fetch_all(
        "select last_manual_sync_at from trading_accounts where id = %s", (account_id,))
    assert slot == [{"last_manual_sync_at": None}]  # given back
    assert world.store.fetch_all("select 1 from sync_logs where account_id = %s",
                                 (account_id,)) == []
    retry = _post(app.url, keys, account_id)
    assert retry.status_code == 202, retry.text
    assert _wait_final(app.url, keys, retry.json()["sync_id"])["status"] == "success"


def test_event_path_starts_the_same_sync(
    world: World, jwks: JwksServer, keys: Keys,
) -> None:
    account_id = world.account_ids[2]
    settings = api_settings(world.db_url, jwks_url=jwks.url, manual_sync_via="event",
                            prefect_api_url=world.prefect.api_url)
    with served(settings) as app:
        accepted = _post(app.url, keys, account_id)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["flow_run_id"] is None
        final = _wait_final(app.url, keys, accepted.json()["sync_id"])
    assert final["status"] == "success" and final["trigger"] == "manual"
    run = _flow_run(world, final["flow_run_id"])
    assert run["parameters"]["sync_id"] == accepted.json()["sync_id"]
    assert run["parameters"]["sync_history"] is True and run["parameters"]["history_days"] == 30


def test_manual_sync_waits_for_a_running_sync_of_the_account(
    world: World, app: ServedApp, keys: Keys,
) -> None:
    """The scheduled cycle holds the account's lease: the manual run waits, then runs."""
    account_id = world.account_ids[3]
    holder = str(uuid.uuid4())
    assert world.store.acquire_sync_lease(account_id, holder, 300)
    accepted = _post(app.url, keys, account_id)
    assert accepted.status_code == 202
    sync_id = accepted.json()["sync_id"]
    # The run has reached its fetch task, whose first step is taking the lease: it waits there.
    _wait_task_running(world, accepted.json()["flow_run_id"], "fetch-account-snapshot")
    waiting = httpx.get(f"{app.url}/api/mt5/sync/{sync_id}",
                        headers=auth_headers(keys.token(USER_A)), timeout=30).json()
    assert waiting["status"] == "processing"
    released_at = datetime.now(UTC)
    world.store.release_sync_lease(account_id, holder)
    assert _wait_final(app.url, keys, sync_id)["status"] == "success"
    # Its terminal work was planned (after the claim) only once the lease was given back.
    [row] = world.store.fetch_all(
        "select (details ->> 'snapshot_taken_at')::timestamptz as snapshot_at from sync_logs"
        " where sync_id = %s", (sync_id,))
    assert row["snapshot_at"] > released_at
