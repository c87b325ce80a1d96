"""The verify sync (sync_type 'verify', issue 14): the real sync-account flow against the
simulated terminal, one outcome per kind of login: connected, auth_failed (never retried),
otp_required, a transient IPC fault (retried, then connected); no trading data either way."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from mt5_sync.credentials import encrypt_password
from mt5_sync.sync.connection import connection_status
from tests.flows.conftest import USER_ID

pytestmark = pytest.mark.e2e


def _verify(h: Any, index: int) -> tuple[Any, dict[str, Any], str]:
    """Write the verify row as the API does (new credentials), then run the flow."""
    from mt5_sync.flows.sync_account import sync_account

    spec = h.world.accounts[index]
    account_id = h.account_ids[spec.login]
    sync_id = str(uuid.uuid4())
    claimed = h.store.replace_account_credentials(
        account_id=account_id, user_id=USER_ID, sync_id=sync_id, window_s=60,
        password_encrypted=encrypt_password(spec.password, h.key))
    assert claimed["outcome"] == "replaced"

    async def go() -> tuple[Any, dict[str, Any]]:
        state = await sync_account(account_id=account_id, sync_id=sync_id, sync_type="verify",
                                   sync_history=False, account_label=str(spec.login),
                                   return_state=True)
        return state, await state.aresult(raise_on_failure=False)

    state, outcome = asyncio.run(go())
    return state, outcome, sync_id


def test_verify_tells_each_kind_of_login_apart_and_writes_no_data(make_harness):
    h = make_harness(4, faults={
        # times=1: a retry would log in fine, so auth_failed proves it was not retried.
        1: [{"kind": "wrong_password", "call": "login", "times": 1}],
        2: [{"kind": "otp_required", "call": "login"}],
        3: [{"kind": "ipc_timeout", "call": "login", "times": 1}],
    })
    expected = {0: ("success", None), 1: ("failed", "auth_failed"),
                2: ("failed", "auth_otp_required"), 3: ("success", None)}
    for index, (status, code) in expected.items():
        state, outcome, sync_id = _verify(h, index)
        assert state.is_completed() == (status == "success"), outcome
        assert (outcome["status"], outcome["error_code"]) == (status, code), outcome
        [row] = h.query("SELECT status, error_code, sync_type, trigger, details"
                        " FROM sync_logs WHERE sync_id = %s", sync_id)
        assert (row["status"], row["error_code"], row["sync_type"]) == (status, code, "verify")
        assert outcome["connection_status"] == connection_status(status, code)
        if status == "success":
            info = row["details"]["account_info"]
            spec = h.world.accounts[index]
            assert (info["login"], info["server"]) == (spec.login, spec.server)
            assert "balance" not in info and "equity" not in info
    assert [connection_status(s, c) for s, c in expected.values()] == [
        "connected", "auth_failed", "otp_required", "connected"]
    # Login and account_info only: no deals, trades, positions or snapshots, no cursor.
    for table in ("deals", "trades", "account_snapshots", "cash_flows"):
        assert h.query(f"SELECT count(*) AS n FROM {table}") == [{"n": 0}], table
    assert h.query("SELECT DISTINCT history_cursor, last_sync_at, sync_lease_holder"
                   " FROM trading_accounts") == [
        {"history_cursor": None, "last_sync_at": None, "sync_lease_holder": None}]
