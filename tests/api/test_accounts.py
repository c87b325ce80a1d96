"""Account lifecycle endpoints with the stub Prefect adapter (the real flows run in
test_accounts_e2e.py): connect (201, sealed at the edge), 409, 422 naming the field, the status
vocabulary, new credentials, deactivate, and an API that holds no private key."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from mt5_sync.api import create_app
from mt5_sync.credentials import (
    ciphertext_key_id,
    decrypt_password,
    generate_key,
    key_id,
    parse_public_key,
)
from mt5_sync.errors import CredentialsError
from tests.api.conftest import USER_A, USER_B, Accounts, auth_headers
from tests.api.support import (
    HOST_PRIVATE_KEY,
    HOST_PUBLIC_KEY,
    Keys,
    StubOrchestrator,
    api_settings,
    served,
)

PASSWORD = "inv-Secret-Pa55"


def _connect(client: httpx.Client, keys: Keys, user: str = USER_A, **body: Any) -> httpx.Response:
    payload = {"login": 7001, "server": "Demo-Server", "investor_password": PASSWORD, **body}
    return client.post("/api/mt5/accounts", json=payload, headers=auth_headers(keys.token(user)))


def _status(client: httpx.Client, keys: Keys, account_id: str,
            user: str = USER_A) -> httpx.Response:
    return client.get(f"/api/mt5/accounts/{account_id}", headers=auth_headers(keys.token(user)))


def _stored(accounts: Accounts, account_id: str) -> dict[str, Any]:
    [row] = accounts.store.fetch_all(
        "select investor_password_encrypted as token, is_active, server_time_rule"
        " from trading_accounts where id = %s", (account_id,))
    return row


def _age_verifies(accounts: Accounts, account_id: str) -> None:
    """Move the account's verify rows a day back: the credentials window has passed."""
    accounts.store.fetch_all(
        "update sync_logs set created_at = created_at - interval '1 day'"
        " where account_id = %s and sync_type = 'verify'", (account_id,))


def test_connect_seals_the_password_and_starts_a_verify_sync(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    response = _connect(client, keys, server_time_rule="fixed:+2")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"account_id", "sync_id", "status", "flow_run_id"}
    assert body["status"] == "verifying" and PASSWORD not in response.text
    stored = _stored(accounts, body["account_id"])
    assert stored["is_active"] and stored["server_time_rule"] == "fixed:+2"
    assert ciphertext_key_id(stored["token"]) == key_id(parse_public_key(HOST_PUBLIC_KEY))
    assert PASSWORD not in stored["token"]
    assert decrypt_password(stored["token"], HOST_PRIVATE_KEY) == PASSWORD  # the host can
    [run] = stub.runs
    assert run.sync_type == "verify" and run.sync_history is False
    assert run.sync_id == body["sync_id"] and run.account_id == body["account_id"]
    assert PASSWORD not in str(run.parameters())
    [row] = accounts.store.fetch_all(
        "select sync_id::text as sync_id, trigger, sync_type, status from sync_logs"
        " where account_id = %s", (body["account_id"],))
    assert row == {"sync_id": body["sync_id"], "trigger": "manual", "sync_type": "verify",
                   "status": "processing"}
    status = _status(client, keys, body["account_id"])
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "verifying"
    assert status.json()["verify"]["sync_id"] == body["sync_id"]
    assert "investor_password" not in status.text and "token" not in status.text
    # The verify sync's own row is readable on the sync status endpoint too.
    sync = client.get(f"/api/mt5/sync/{body['sync_id']}", headers=auth_headers(keys.token(USER_A)))
    assert sync.status_code == 200 and sync.json()["sync_type"] == "verify"


def test_duplicate_server_and_login_of_the_same_user_is_409(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    assert _connect(client, keys).status_code == 201
    duplicate = _connect(client, keys, investor_password="another-one")
    assert duplicate.status_code == 409, duplicate.text
    assert "another-one" not in duplicate.text and len(stub.runs) == 1
    # The account registered by the fixture (login 1001 on Demo-Server) too.
    assert _connect(client, keys, login=1001).status_code == 409
    # Same server and login for another user, or another server: not a duplicate.
    assert _connect(client, keys, user=USER_B).status_code == 201
    assert _connect(client, keys, server="Other-Server").status_code == 201


@pytest.mark.parametrize(("body", "field"), [
    ({"investor_password": None}, "investor_password"),
    ({"investor_password": ""}, "investor_password"),
    ({"investor_password": 12345}, "investor_password"),
    ({"login": "7001"}, "login"),
    ({"login": 0}, "login"),
    ({"login": None}, "login"),
    ({"server": ""}, "server"),
    ({"server": " Demo"}, "server"),
    ({"server_time_rule": "mars+1"}, "server_time_rule"),
    ({"passwrd": "x"}, "passwrd"),
])
def test_invalid_connect_bodies_are_422_naming_the_field(
    body: dict[str, Any], field: str, keys: Keys, accounts: Accounts, client: httpx.Client,
    stub: StubOrchestrator,
) -> None:
    payload: dict[str, Any] = {"login": 7001, "server": "Demo-Server",
                               "investor_password": PASSWORD, **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    response = client.post("/api/mt5/accounts", json=payload,
                           headers=auth_headers(keys.token(USER_A)))
    assert response.status_code == 422, response.text
    assert any(i["loc"] == ["body", field] for i in response.json()["detail"]), response.text
    assert PASSWORD not in response.text
    assert stub.runs == []


def test_status_tells_connected_from_auth_failed_otp_and_unreachable(
    keys: Keys, accounts: Accounts, client: httpx.Client,
) -> None:
    """The verify row's outcome -> the account's status (codes from classify_error)."""
    cases = {None: "connected", "auth_failed": "auth_failed",
             "auth_otp_required": "otp_required", "ipc_timeout": "server_unreachable",
             "terminal_timeout": "server_unreachable", "account_mismatch": "error"}
    for login, (code, expected) in enumerate(cases.items(), start=8000):
        created = _connect(client, keys, login=login).json()
        assert accounts.store.finish_verify_sync({
            "sync_id": created["sync_id"], "status": "success" if code is None else "failed",
            "error_code": code, "error_message": None if code is None else f"{code} says no",
            "duration_ms": 5, "details": {"account_info": {"company": "Sim Broker",
                                                           "currency": "USD", "leverage": 100}}})
        body = _status(client, keys, created["account_id"]).json()
        assert body["status"] == expected, (code, body)
        # A login-only verify is no sample for the cycle's duration estimates.
        assert accounts.store.sync_duration_estimates([created["account_id"]], 5) == []
        assert body["verify"]["error_code"] == code
        if code is None:
            assert (body["broker_name"], body["currency"], body["leverage"]) == (
                "Sim Broker", "USD", 100)
    # An account added outside the API was never verified.
    assert _status(client, keys, accounts.a_active).json()["status"] == "unverified"


def test_new_credentials_replace_the_password_and_verify_again(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    created = _connect(client, keys).json()
    accounts.store.finish_verify_sync({"sync_id": created["sync_id"], "status": "failed",
                                       "error_code": "auth_failed", "error_message": "no"})
    assert _status(client, keys, created["account_id"]).json()["status"] == "auth_failed"
    _age_verifies(accounts, created["account_id"])
    url = f"/api/mt5/accounts/{created['account_id']}/credentials"
    response = client.put(url, json={"investor_password": "the-right-one"},
                          headers=auth_headers(keys.token(USER_A)))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["account_id"] == created["account_id"] and body["sync_id"] != created["sync_id"]
    assert decrypt_password(_stored(accounts, created["account_id"])["token"],
                            HOST_PRIVATE_KEY) == "the-right-one"
    assert [r.sync_type for r in stub.runs] == ["verify", "verify"]
    assert _status(client, keys, created["account_id"]).json()["status"] == "verifying"
    # Someone else's account, an unknown id, a malformed body: 404, 404, 422.
    other = client.put(url, json={"investor_password": "x"},
                       headers=auth_headers(keys.token(USER_B)))
    assert other.status_code == 404
    unknown = client.put(f"/api/mt5/accounts/{uuid.uuid4()}/credentials",
                         json={"investor_password": "x"},
                         headers=auth_headers(keys.token(USER_A)))
    assert unknown.status_code == 404
    bad = client.put(url, json={"password": "x"}, headers=auth_headers(keys.token(USER_A)))
    assert bad.status_code == 422
    assert {tuple(i["loc"]) for i in bad.json()["detail"]} >= {("body", "investor_password")}


def test_new_credentials_at_most_once_per_window(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    """Every verify is a broker login: a retyped password within the window is 429, and
    nothing is written (the stored password stays, no verify row, no run)."""
    created = _connect(client, keys).json()
    url = f"/api/mt5/accounts/{created['account_id']}/credentials"
    before = _stored(accounts, created["account_id"])["token"]
    too_soon = client.put(url, json={"investor_password": "typed-again"},
                          headers=auth_headers(keys.token(USER_A)))
    assert too_soon.status_code == 429, too_soon.text
    retry_after = int(too_soon.headers["Retry-After"])
    assert 1 <= retry_after <= 60 and too_soon.json()["retry_after_seconds"] == retry_after
    assert "typed-again" not in too_soon.text
    assert _stored(accounts, created["account_id"])["token"] == before
    assert len(stub.runs) == 1 and accounts.store.fetch_all(
        "select count(*) as n from sync_logs where account_id = %s",
        (created["account_id"],)) == [{"n": 1}]
    _age_verifies(accounts, created["account_id"])
    assert client.put(url, json={"investor_password": "typed-again"},
                      headers=auth_headers(keys.token(USER_A))).status_code == 202
    assert client.put(url, json={"investor_password": "and-again"},
                      headers=auth_headers(keys.token(USER_A))).status_code == 429


def test_delete_deactivates_keeps_history_and_leaves_the_cycle(
    keys: Keys, accounts: Accounts, client: httpx.Client,
) -> None:
    created = _connect(client, keys).json()
    account_id = created["account_id"]
    assert client.delete(f"/api/mt5/accounts/{account_id}",
                         headers=auth_headers(keys.token(USER_B))).status_code == 404
    gone = client.delete(f"/api/mt5/accounts/{account_id}",
                         headers=auth_headers(keys.token(USER_A)))
    assert gone.status_code == 204, gone.text
    assert _stored(accounts, account_id)["is_active"] is False
    assert accounts.store.fetch_all("select count(*) as n from sync_logs where account_id = %s",
                                    (account_id,)) == [{"n": 1}]  # history kept
    assert account_id not in {a.id for a in accounts.store.list_active_accounts()}
    assert _status(client, keys, account_id).status_code == 404
    assert client.delete(f"/api/mt5/accounts/{account_id}",
                         headers=auth_headers(keys.token(USER_A))).status_code == 404
    # Connecting the same server + login again re-activates that account, history and all.
    again = _connect(client, keys, investor_password="new-pass")
    assert again.status_code == 201 and again.json()["account_id"] == account_id
    assert accounts.store.fetch_all("select count(*) as n from sync_logs where account_id = %s",
                                    (account_id,)) == [{"n": 2}]


def test_prefect_down_on_connect_is_503_and_the_verify_is_marked_failed(
    keys: Keys, accounts: Accounts, client: httpx.Client, stub: StubOrchestrator,
) -> None:
    stub.fail = True
    response = _connect(client, keys)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    [row] = accounts.store.fetch_all(
        "select l.status, l.error_code, a.id::text as account_id from sync_logs l"
        " join trading_accounts a on a.id = l.account_id where a.login_number = 7001")
    assert (row["status"], row["error_code"]) == ("failed", "orchestrator_unavailable")
    stub.fail = False
    retry = client.put(f"/api/mt5/accounts/{row['account_id']}/credentials",
                       json={"investor_password": PASSWORD},
                       headers=auth_headers(keys.token(USER_A)))
    assert retry.status_code == 202 and len(stub.runs) == 1


def test_the_api_refuses_a_private_key_and_cannot_open_what_it_sealed(
    db_url: str, keys: Keys, accounts: Accounts, client: httpx.Client, api: Any,
) -> None:
    """The API process holds the public key only: it refuses to start with a private key,
    and nothing in its configuration opens a password it stored."""
    for extra in ({"credentials_key": HOST_PRIVATE_KEY}, {"credentials_key_block": "k"}):
        with pytest.raises(ValueError, match="only MT5SYNC_CREDENTIALS_PUBLIC_KEY"):
            create_app(api_settings(db_url, **extra), prefect_api=StubOrchestrator())
    created = _connect(client, keys).json()
    token = _stored(accounts, created["account_id"])["token"]
    config = api.app.state.config
    assert config.credentials_key is None and config.credentials_key_block is None
    # Every key-like value the running API holds fails to open the stored password.
    for candidate in (config.credentials_public_key, None, generate_key()):
        with pytest.raises(CredentialsError):
            decrypt_password(token, candidate)


def test_without_a_public_key_connecting_is_503(
    db_url: str, keys: Keys, accounts: Accounts,
) -> None:
    with served(api_settings(db_url, credentials_public_key=None), StubOrchestrator()) as app, \
            httpx.Client(base_url=app.url, timeout=30) as c:
        response = _connect(c, keys)
    assert response.status_code == 503 and "public key" in response.json()["detail"]
