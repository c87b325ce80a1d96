"""The accept path: body validation, the 202 and its row, the rate limit, the estimate, and
"Prefect down -> 503, slot given back" (stub adapter; the real-Prefect version is in e2e)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api.conftest import USER_A, Accounts, auth_headers
from tests.api.support import Keys, StubOrchestrator


def _post(client: httpx.Client, keys: Keys, account_id: str, **kwargs: object) -> httpx.Response:
    return client.post(f"/api/mt5/account/{account_id}/sync",
                       headers=auth_headers(keys.token(USER_A)), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"sync_type": "fast"}, "sync_type", "'full' or 'incremental'"),
    ({"history_days": 0}, "history_days", "greater than or equal to 1"),
    ({"history_days": 366}, "history_days", "less than or equal to 365"),
    ({"history_days": 30.5}, "history_days", "valid integer"),
    ({"history_days": "30"}, "history_days", "valid integer"),
    ({"sync_history": "no"}, "sync_history", "valid boolean"),
    ({"sync_history": 1}, "sync_history", "valid boolean"),
    ({"histroy_days": 10}, "histroy_days", "Extra inputs are not permitted"),
])
def test_invalid_bodies_are_422_naming_the_field(
    body: dict, field: str, fragment: str, keys: Keys, accounts: Accounts,
    client: httpx.Client, stub: StubOrchestrator,
) -> None:
    response = _post(client, keys, accounts.a_active, json=body)
    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    assert any(i["loc"][-1] == field and fragment in i["msg"] for i in issues), issues
    assert all(set(i) == {"loc", "msg", "type"} for i in issues)  # input is not echoed
    assert stub.runs == []
    # Nothing was claimed: a valid request right after is accepted.
    assert _post(client, keys, accounts.a_active).status_code == 202


def test_non_object_body_is_422(keys: Keys, accounts: Accounts, client: httpx.Client) -> None:
    assert _post(client, keys, accounts.a_active, json=[1, 2]).status_code == 422
    broken = client.post(f"/api/mt5/account/{accounts.a_active}/sync", content=b"{not json",
                         headers={**auth_headers(keys.token(USER_A)),
                                  "content-type": "application/json"})
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"


def test_accepted_sync_writes_processing_row_and_hands_run_to_prefect(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    response = _post(client, keys, accounts.a_active,
                     json={"sync_type": "full", "sync_history": False, "history_days": 7})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) >= {"sync_id", "status", "estimated_duration_seconds", "account_id",
                         "sync_type"}
    assert body["status"] == "processing" and body["sync_type"] == "full"
    assert body["account_id"] == accounts.a_active
    assert body["estimated_duration_seconds"] == 30  # no history yet: the default
    uuid.UUID(body["sync_id"])
    [run] = stub.runs
    assert run.parameters() == {
        "account_id": accounts.a_active, "sync_id": body["sync_id"], "sync_type": "full",
        "sync_history": False, "history_days": 7, "account_label": "1001@Demo-Server",
        "trigger": "manual",
    }
    [row] = accounts.store.fetch_all(
        "select status, trigger, sync_type, account_id::text from sync_logs where sync_id = %s",
        (body["sync_id"],))
    assert row == {"status": "processing", "trigger": "manual", "sync_type": "full",
                   "account_id": accounts.a_active}


def test_empty_body_means_incremental_defaults(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    assert _post(client, keys, accounts.a_active).status_code == 202
    [run] = stub.runs
    assert (run.sync_type, run.sync_history, run.history_days) == ("incremental", True, 30)


def test_second_request_within_the_window_is_429_with_retry_after(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    assert _post(client, keys, accounts.a_active).status_code == 202
    second = _post(client, keys, accounts.a_active)
    assert second.status_code == 429
    retry_after = int(second.headers["Retry-After"])
    assert 55 <= retry_after <= 60
    assert second.json()["retry_after_seconds"] == retry_after
    assert len(stub.runs) == 1
    # Once the window has passed (moved back in the database), it is accepted again.
    accounts.store.fetch_all(
        "update trading_accounts set last_manual_sync_at = now() - interval '61 seconds'"
        " where id = %s", (accounts.a_active,))
    assert _post(client, keys, accounts.a_active).status_code == 202
    # Another account of the same user is independent.
    other = accounts.add(USER_A, 1003)
    assert _post(client, keys, other).status_code == 202


def test_estimate_is_median_of_recent_successful_syncs(
    keys: Keys, accounts: Accounts, client: httpx.Client,
) -> None:
    now = datetime.now(UTC)
    durations = [4000, 9000, 12000, 100_000, 2000, 11000]  # median 10 000 ms
    for i, ms in enumerate(durations):
        accounts.store.fetch_all(
            "insert into sync_logs (sync_id, account_id, trigger, sync_type, status, started_at,"
            " completed_at, duration_ms) values (%s, %s, 'scheduled', 'incremental', 'success',"
            " %s, %s, %s)",
            (str(uuid.uuid4()), accounts.a_active, now - timedelta(minutes=i + 1),
             now - timedelta(minutes=i + 1) + timedelta(milliseconds=ms), ms))
    accounts.store.fetch_all(  # failures do not count
        "insert into sync_logs (sync_id, account_id, trigger, sync_type, status, started_at,"
        " duration_ms) values (%s, %s, 'scheduled', 'incremental', 'failed', now(), 999999)",
        (str(uuid.uuid4()), accounts.a_active))
    assert accounts.store.recent_sync_durations(accounts.a_active)[:2] == [4000, 9000]
    response = _post(client, keys, accounts.a_active)
    assert response.json()["estimated_duration_seconds"] == 10


def test_prefect_unreachable_gives_503_and_the_slot_back(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    before = accounts.store.fetch_all(
        "select last_manual_sync_at from trading_accounts where id = %s", (accounts.a_active,))
    stub.fail = True
    down = _post(client, keys, accounts.a_active)
    assert down.status_code == 503
    assert down.headers["Retry-After"]
    assert "unavailable" in down.json()["detail"]
    after = accounts.store.fetch_all(
        "select last_manual_sync_at from trading_accounts where id = %s", (accounts.a_active,))
    assert after == before  # restored exactly (here: NULL)
    assert accounts.store.fetch_all("select * from sync_logs") == []  # no orphan row
    stub.fail = False
    retry = _post(client, keys, accounts.a_active)
    assert retry.status_code == 202
    assert len(stub.runs) == 1


def test_release_restores_previous_timestamp_and_never_undoes_a_later_claim(
    accounts: Accounts,
) -> None:
    store = accounts.store
    store.fetch_all("update trading_accounts set last_manual_sync_at = '2026-01-01T00:00:00Z'"
                    " where id = %s", (accounts.a_active,))
    sync_id = str(uuid.uuid4())
    claim = store.claim_manual_sync_slot(account_id=accounts.a_active, user_id=USER_A,
                                         sync_id=sync_id, sync_type="incremental", window_s=60)
    assert claim["outcome"] == "claimed"
    assert store.release_manual_sync_slot(sync_id) is True
    assert store.release_manual_sync_slot(sync_id) is False  # idempotent
    [row] = store.fetch_all("select last_manual_sync_at from trading_accounts where id = %s",
                            (accounts.a_active,))
    assert row["last_manual_sync_at"] == datetime(2026, 1, 1, tzinfo=UTC)
    # A row that already has an outcome (the run did happen) is never released.
    sync_id = str(uuid.uuid4())
    store.claim_manual_sync_slot(account_id=accounts.a_active, user_id=USER_A, sync_id=sync_id,
                                 sync_type="incremental", window_s=60)
    store.fetch_all("update sync_logs set status = 'success' where sync_id = %s", (sync_id,))
    assert store.release_manual_sync_slot(sync_id) is False
    assert store.claim_manual_sync_slot(
        account_id=accounts.a_active, user_id=USER_A, sync_id=str(uuid.uuid4()),
        sync_type="incremental", window_s=60)["outcome"] == "rate_limited"


def test_database_down_is_503_without_leaking_the_conninfo(
    keys: Keys, accounts: Accounts, jwks: object,
) -> None:
    from tests.api.support import api_settings, served

    url = "postgresql://app:hunter2-db-password@127.0.0.1:9/nowhere?connect_timeout=2"
    with served(api_settings(url), StubOrchestrator()) as server:
        response = httpx.post(f"{server.url}/api/mt5/account/{accounts.a_active}/sync",
                              headers=auth_headers(keys.token(USER_A)), timeout=30)
    assert response.status_code == 503
    assert "hunter2" not in response.text and "127.0.0.1:9" not in response.text


def test_openapi_is_served(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/api/mt5/account/{account_id}/sync"]["post"]
    assert {"202", "401", "403", "404", "422", "429", "503"} <= set(post["responses"])
    assert "/api/mt5/sync/{sync_id}" in schema["paths"]
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(("override", "message"), [
    ({"api_key": None}, "MT5SYNC_API_KEY"),
    ({"api_jwt_issuer": None}, "MT5SYNC_API_JWT_ISSUER"),
    ({"api_jwt_secret": None, "api_jwks_url": None}, "no way to verify"),
    ({"prefect_api_url": None}, "PREFECT_API_URL"),
    ({"database_url": None}, "DATABASE_URL"),
])
def test_misconfiguration_fails_at_start_up(override: dict, message: str) -> None:
    from mt5_sync.api import create_app
    from tests.api.support import api_settings

    with pytest.raises(ValueError, match=message):
        create_app(api_settings("postgresql://x@127.0.0.1:9/x", **override))


def test_python_dash_m_serves_on_loopback(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from mt5_sync.localstack import free_port
    from tests.api.support import API_KEY, HS_SECRET, ISSUER

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MT5SYNC_", "PREFECT_"))}
    env.update({"DATABASE_URL": db_url, "MT5SYNC_API_KEY": API_KEY,
                "SUPABASE_JWT_SECRET": HS_SECRET, "MT5SYNC_API_JWT_ISSUER": ISSUER,
                "PREFECT_API_URL": "http://127.0.0.1:9/api", "MT5SYNC_API_PORT": str(port),
                "MT5SYNC_TERMINAL_BACKEND": "simulated"})
    proc = subprocess.Popen([sys.executable, "-m", "mt5_sync.api", "--log-level", "warning"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        assert "paths" in httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
    finally:
        proc.terminate()
        proc.wait(10)
    missing = subprocess.run([sys.executable, "-m", "mt5_sync.api"], cwd=tmp_path,
                             env={**env, "MT5SYNC_API_KEY": ""}, capture_output=True, text=True)
    assert missing.returncode == 2 and "MT5SYNC_API_KEY" in missing.stderr


def test_issuer_and_jwks_follow_from_supabase_url(
    db_url: str, jwks: object, keys: Keys, accounts: Accounts,
) -> None:
    """SUPABASE_URL alone (no issuer, no JWKS URL, no HS256 secret) verifies ES256 tokens."""
    from tests.api.support import api_settings, served

    base = str(jwks.url).removesuffix("/auth/v1/.well-known/jwks.json")  # type: ignore[attr-defined]
    settings = api_settings(db_url, api_jwt_issuer=None, api_jwt_secret=None,
                            api_jwks_url=None, supabase_url=base)
    with served(settings, StubOrchestrator()) as server:
        def post(token: str) -> int:
            return httpx.post(f"{server.url}/api/mt5/account/{accounts.a_active}/sync",
                              headers=auth_headers(token), timeout=30).status_code

        assert post(keys.token(USER_A, alg="HS256", iss=f"{base}/auth/v1")) == 401  # no secret
        assert post(keys.token(USER_A, alg="ES256")) == 401  # iss of another project
        assert post(keys.token(USER_A, alg="ES256", iss=f"{base}/auth/v1")) == 202


def test_unexpected_adapter_error_also_gives_the_slot_back(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    stub.fail = KeyError("id")
    assert _post(client, keys, accounts.a_active).status_code == 503
    assert accounts.store.fetch_all("select * from sync_logs") == []
    stub.fail = False
    assert _post(client, keys, accounts.a_active).status_code == 202
