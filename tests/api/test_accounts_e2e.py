"""Account lifecycle end to end, on real servers: HTTP -> the API (public key only) -> real
Prefect server -> the ``manual-sync`` deployment served by a Runner subprocess (which alone
holds the private key) -> the real ``sync-account`` flow's verify path against the simulated
MT5 world -> the status endpoint; then a normal cycle (``mt5-sync sync``, the scheduled flow)
that picks the new account up and syncs it.

Also: a wrong password first (auth_failed), then the right one through PUT (connected); a
deactivated account that keeps its history and is left out of the next cycle; and a search
for the plaintext passwords in everything the run leaves behind: the API's and the worker's
logs, Prefect's stored logs, flow run parameters, events, artifacts, results, responses.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mt5_sync.localstack import EmbeddedPostgres, PrefectServer, prefect_client_env
from mt5_sync.mt5sim.world import AccountSpec, build_world
from mt5_sync.store.postgres import PostgresStore
from tests.api.conftest import USER_A, auth_headers
from tests.api.support import HOST_PRIVATE_KEY, JwksServer, Keys, ServedApp, api_settings, served

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "sync-account/manual-sync"


@dataclass
class World:
    db_url: str
    store: PostgresStore
    sim: list[AccountSpec]
    prefect: PrefectServer
    env: dict[str, str]
    home: Path
    runner_log: Path
    responses: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def world(
    pg: EmbeddedPostgres, migrated_template: str, prefect_server: PrefectServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("accounts-e2e")
    db_url = pg.create_database("accounts_e2e", template=migrated_template, drop=True)
    now = datetime.now(UTC).replace(microsecond=0)
    sim = build_world(4, seed=11, now_utc=now, timeline_start_utc=now - timedelta(days=10),
                      state_dir=str(tmp / "sim-state"))
    world_path = sim.save(tmp / "world.json")
    store = PostgresStore(db_url)
    store.ensure_user(USER_A, "e2e-accounts@example.com")  # Supabase Auth's row, on Postgres
    home = tmp / "prefect-home"
    env = prefect_client_env(home)
    env.update({
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        # Debug logs from the worker side too: the password must not be in them either.
        "PREFECT_LOGGING_LEVEL": "DEBUG",
        "DATABASE_URL": db_url,
        "MT5SYNC_CREDENTIALS_KEY": HOST_PRIVATE_KEY,  # the terminal host's, not the API's
        "MT5SIM_WORLD": str(world_path),
        "MT5SYNC_TERMINAL_BACKEND": "simulated",
        "MT5SYNC_SIMULATED_SLOTS": "2",
        "MT5SYNC_RETRY_BACKOFF_S": "0.2",
        "MT5SYNC_CYCLE_BUDGET_S": "0",
        "PYTHONPATH": str(REPO_ROOT),
    })
    runner_log = tmp / "runner.log"
    log = runner_log.open("wb")
    runner = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "serve_manual_sync.py")],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while httpx.get(f"{prefect_server.api_url}/deployments/name/{DEPLOYMENT}"
                        ).status_code != 200:
            if runner.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(runner_log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield World(db_url, store, list(sim.accounts), prefect_server, env, home, runner_log)
    finally:
        os.killpg(runner.pid, 15)
        try:
            runner.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, 9)
            runner.wait(5)
        log.close()


@pytest.fixture
def app(world: World, jwks: JwksServer) -> Iterator[ServedApp]:
    # The API's environment has no private key: create_app would refuse one.
    with served(api_settings(world.db_url, jwks_url=jwks.url,
                             prefect_api_url=world.prefect.api_url)) as server:
        yield server


def _call(world: World, keys: Keys, method: str, url: str, **kwargs: Any) -> httpx.Response:
    response = httpx.request(method, url, headers=auth_headers(keys.token(USER_A)),
                             timeout=60, **kwargs)
    world.responses.append(f"{response.status_code} {response.headers} {response.text}")
    return response


def _connect(world: World, app: ServedApp, keys: Keys, spec: AccountSpec,
             password: str) -> dict[str, Any]:
    response = _call(world, keys, "POST", f"{app.url}/api/mt5/accounts", json={
        "login": spec.login, "server": spec.server, "investor_password": password,
        "server_time_rule": spec.time_rule})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _settled(world: World, app: ServedApp, keys: Keys, account_id: str,
             timeout_s: float = 240) -> dict[str, Any]:
    """Poll the account's status until its verify sync has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = _call(world, keys, "GET", f"{app.url}/api/mt5/accounts/{account_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] != "verifying":
            return dict(response.json())
        time.sleep(0.5)
    raise TimeoutError(f"account {account_id} still verifying after {timeout_s}s: "
                       f"{world.runner_log.read_text(errors='replace')[-3000:]}")


def _age_verifies(world: World, account_id: str) -> None:
    """Move the account's verify rows a day back: the credentials window (one verify per
    account per minute) has passed, without the test waiting for it."""
    world.store.fetch_all(
        "update sync_logs set created_at = created_at - interval '1 day'"
        " where account_id = %s and sync_type = 'verify'", (account_id,))


def _cycle(world: World) -> dict[str, Any]:
    """One normal cycle over every active account: ``mt5-sync sync`` (the scheduled flow)."""
    done = subprocess.run([sys.executable, "-m", "mt5_sync.cli", "sync", "--json"],
                          cwd=REPO_ROOT, env=world.env, capture_output=True, text=True,
                          timeout=600)
    (world.home / "cycles.log").open("a").write(done.stdout + done.stderr)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return dict(json.loads(done.stdout[done.stdout.index("{"):]))


def _outcomes(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["account_id"]: r for r in summary["syncResults"]}


def _every_log(api: str) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = []
    while True:
        page = httpx.post(f"{api}/logs/filter", json={"limit": 200, "offset": len(logs)},
                          timeout=30)
        assert page.status_code == 200, page.text
        logs += page.json()
        if len(page.json()) < 200:
            return logs


def _every_event(api: str) -> list[dict[str, Any]]:
    """Every event Prefect stored (the filter's default window is the last day)."""
    page = httpx.post(f"{api}/events/filter", json={"limit": 50}, timeout=30)
    events: list[dict[str, Any]] = []
    while True:
        assert page.status_code == 200, page.text
        events += page.json()["events"]
        if not page.json().get("next_page"):
            return events
        page = httpx.get(page.json()["next_page"], timeout=30)


def test_connect_verifies_then_the_next_cycle_syncs_the_account(
    world: World, app: ServedApp, keys: Keys,
) -> None:
    spec = world.sim[0]
    created = _connect(world, app, keys, spec, spec.password)
    assert created["flow_run_id"]
    status = _settled(world, app, keys, created["account_id"])
    assert status["status"] == "connected", status
    assert status["verify"]["sync_id"] == created["sync_id"]
    assert (status["login"], status["server"], status["broker_name"]) == (
        spec.login, spec.server, spec.company)
    assert status["last_sync_at"] is None  # verified, not synced: no trading data yet
    assert world.store.fetch_all("select count(*) as n from deals where account_id = %s",
                                 (created["account_id"],)) == [{"n": 0}]
    run = httpx.get(f"{world.prefect.api_url}/flow_runs/{created['flow_run_id']}").json()
    assert run["parameters"]["sync_type"] == "verify"
    assert run["state"]["type"] == "COMPLETED"

    summary = _cycle(world)
    mine = _outcomes(summary)[created["account_id"]]
    assert mine["status"] == "success" and mine["trades_synced"] > 0, mine
    [row] = world.store.fetch_all(
        "select trigger, sync_type, status from sync_logs where account_id = %s"
        " and sync_type <> 'verify'", (created["account_id"],))
    # No history cursor yet: the planner makes the account's first sync a full one.
    assert row == {"trigger": "scheduled", "sync_type": "full", "status": "success"}
    after = _settled(world, app, keys, created["account_id"])
    assert after["status"] == "connected" and after["last_successful_sync_at"] is not None


def test_a_wrong_password_is_auth_failed_and_new_credentials_connect(
    world: World, app: ServedApp, keys: Keys,
) -> None:
    spec = world.sim[1]
    created = _connect(world, app, keys, spec, "not-the-password")
    failed = _settled(world, app, keys, created["account_id"])
    assert failed["status"] == "auth_failed", failed
    assert failed["verify"]["error_code"] == "auth_failed"
    # Tried once (the verify's login); the next three cycles leave it alone: a broker blocks
    # the host's IP after repeated failed logins (account health, mt5_sync/sync/health.py).
    for _ in range(3):
        mine = _outcomes(_cycle(world))[created["account_id"]]
        assert (mine["status"], mine["state"]) == ("skipped", "needs_credentials"), mine
    assert world.store.fetch_all(
        "select count(*) as n from sync_logs where account_id = %s and sync_type <> 'verify'",
        (created["account_id"],)) == [{"n": 0}]
    _age_verifies(world, created["account_id"])
    put = _call(world, keys, "PUT", f"{app.url}/api/mt5/accounts/{created['account_id']}"
                "/credentials", json={"investor_password": spec.password})
    assert put.status_code == 202, put.text
    assert put.json()["sync_id"] != created["sync_id"]
    fixed = _settled(world, app, keys, created["account_id"])
    assert fixed["status"] == "connected", fixed
    assert fixed["verify"]["sync_id"] == put.json()["sync_id"]
    # the new credentials lift the backoff: the next cycle syncs it
    mine = _outcomes(_cycle(world))[created["account_id"]]
    assert mine["status"] == "success", mine


def test_a_deactivated_account_keeps_its_history_and_leaves_the_cycle(
    world: World, app: ServedApp, keys: Keys,
) -> None:
    spec = world.sim[2]
    created = _connect(world, app, keys, spec, spec.password)
    account_id = created["account_id"]
    assert _settled(world, app, keys, account_id)["status"] == "connected"
    first = _cycle(world)
    assert _outcomes(first)[account_id]["status"] == "success"
    deals = world.store.fetch_all("select count(*) as n from deals where account_id = %s",
                                  (account_id,))[0]["n"]
    assert deals > 0
    gone = _call(world, keys, "DELETE", f"{app.url}/api/mt5/accounts/{account_id}")
    assert gone.status_code == 204, gone.text
    second = _cycle(world)
    assert account_id not in _outcomes(second) and second["totalAccounts"] >= 1
    assert world.store.fetch_all("select count(*) as n from deals where account_id = %s",
                                 (account_id,)) == [{"n": deals}]
    logs = world.store.fetch_all("select sync_type from sync_logs where account_id = %s"
                                 " order by created_at", (account_id,))
    assert [r["sync_type"] for r in logs] == ["verify", "full"]


def test_no_password_in_logs_parameters_results_events_or_responses(
    world: World, app: ServedApp, keys: Keys, caplog: pytest.LogCaptureFixture,
) -> None:
    """Runs last: connect with a wrong password, fix it, one cycle; then every trace of the
    module's runs is searched for every plaintext password used."""
    caplog.set_level(logging.DEBUG)
    spec = world.sim[3]
    created = _connect(world, app, keys, spec, "wrong-" + spec.password)
    assert _settled(world, app, keys, created["account_id"])["status"] == "auth_failed"
    _age_verifies(world, created["account_id"])
    put = _call(world, keys, "PUT", f"{app.url}/api/mt5/accounts/{created['account_id']}"
                "/credentials", json={"investor_password": spec.password})
    assert _settled(world, app, keys, created["account_id"])["status"] == "connected"
    _cycle(world)

    secrets = {s.password for s in world.sim} | {"not-the-password", "wrong-" + spec.password}
    api = world.prefect.api_url
    flow_runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
    verify_runs = {r["id"] for r in flow_runs if r["parameters"].get("sync_type") == "verify"}
    # This test's two verify runs are among those read back from Prefect.
    assert {created["flow_run_id"], put.json()["flow_run_id"]} <= verify_runs
    prefect_logs = _every_log(api)
    events = _every_event(api)
    artifacts = httpx.post(f"{api}/artifacts/filter", json={"limit": 200}, timeout=30)
    assert artifacts.status_code == 200, artifacts.text
    assert prefect_logs and events and artifacts.json()
    results = "".join(p.read_text(errors="replace") for p in world.home.rglob("*")
                      if p.is_file() and p.stat().st_size < 50_000_000)
    haystacks = {
        "API log records": "\n".join(r.getMessage() for r in caplog.records),
        "worker log": world.runner_log.read_text(errors="replace"),
        "cycle output": (world.home / "cycles.log").read_text(errors="replace"),
        "flow run parameters": json.dumps([r["parameters"] for r in flow_runs]),
        "Prefect logs": json.dumps(prefect_logs),
        "events": json.dumps(events),
        "artifacts": artifacts.text,
        "results and Prefect home": results,
        "responses": "\n".join(world.responses),
        "sync_logs": json.dumps(world.store.fetch_all("select * from sync_logs"), default=str),
    }
    assert len(haystacks["worker log"]) > 1000 and caplog.records  # something was captured
    # Names only, so a failure does not print the password it found.
    leaked = sorted(name for name, text in haystacks.items() if any(s in text for s in secrets))
    assert leaked == []
