"""The verify sync: can the terminal host log in to a newly connected (or re-keyed) account?

A verify sync is the first thing that happens to an account added through the API
(``POST /api/mt5/accounts``) and after its password is replaced (``PUT .../credentials``):
take the account's lease, open the sealed password, log in, check that the terminal reports
the login and server asked for (DESIGN.md: "After every login, check that account_info().login
and .server are the ones asked for"), read ``account_info`` -- and nothing else: no
positions, no history, no trading data written. Its outcome goes to its own sync_logs row
(``mt5_finish_verify_sync``), from which the API reports the account's connection status.

Plain functions (no Prefect): the ``verify-account-login`` task wraps :func:`run_verify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from mt5_sync.clock import utc_now
from mt5_sync.contracts import Credentials, FetchRequest, FetchResult
from mt5_sync.credentials import decrypt_password
from mt5_sync.errors import InvalidRequest, SyncError, is_transient
from mt5_sync.store.factory import Store
from mt5_sync.sync.leases import LeaseKeeper
from mt5_sync.sync.steps import describe_error

ConnectionStatus = Literal[
    "verifying", "connected", "auth_failed", "otp_required", "server_unreachable", "error",
    "unverified",
]

#: sync_logs.error_code of a failed verify -> the account's connection status.
#: Sources: DESIGN.md / reference/metatrader5-5.0.6231.json ``last_error()`` codes, as
#: classified in mt5_sync/terminal/session.py:classify_error --
#: -6 RES_E_AUTH_FAILED -> ``auth_failed``; an auth failure whose message asks for a one-time
#: password or certificate -> ``auth_otp_required`` (DESIGN.md: "Accounts needing
#: OTP/certificates cannot log in through the API: report that clearly"); -10000..-10005 IPC
#: faults, a terminal timeout, no result -> the terminal could not get through. The MetaTrader5
#: API has no separate code for "broker server down or unknown": a login that cannot reach the
#: trade server surfaces as one of those transient faults, which is why they all read
#: ``server_unreachable`` (try again later), never ``auth_failed``.
_STATUS_BY_CODE: dict[str, ConnectionStatus] = {
    "auth_failed": "auth_failed",
    "auth_otp_required": "otp_required",
    "ipc_timeout": "server_unreachable",
    "ipc_error": "server_unreachable",
    "no_result": "server_unreachable",
    "terminal_unavailable": "server_unreachable",
    "terminal_timeout": "server_unreachable",
}

#: account_info fields kept in the verify's sync_logs details (what the app shows; no money).
ACCOUNT_INFO_FIELDS = ("login", "server", "company", "currency", "leverage", "trade_mode")


def connection_status(verify_status: str | None, error_code: str | None) -> ConnectionStatus:
    """The account's connection status from its latest verify sync's (status, error_code)."""
    if verify_status is None:
        return "unverified"  # added outside the API (SQL, demo): never verified
    if verify_status == "processing":
        return "verifying"
    if verify_status == "success":
        return "connected"
    return _STATUS_BY_CODE.get(error_code or "", "error")


async def run_verify(
    *,
    account_id: str,
    sync_id: str,
    flow_run_id: str | None,
    store: Store,
    fetch: Callable[[FetchRequest], Awaitable[FetchResult]],
    key: Callable[[], Awaitable[str | None]],
    lease_ttl_s: int,
    lease_wait_s: float,
    attempts: int = 3,
    backoff_s: float = 1.0,
    in_db: Callable[..., Awaitable[Any]],
    keeper: LeaseKeeper | None = None,
) -> dict[str, Any]:
    """Verify one account; write and return the outcome (``mt5_finish_verify_sync`` entry).

    ``fetch``: the terminal pool's fetch (in a thread); ``key``: resolves the host's key ring;
    ``in_db(fn, *args)``: runs a blocking store call; ``keeper`` renews the (short) lease
    while the login runs (mt5_sync/sync/leases.py). Transient faults (IPC, timeouts) are
    tried ``attempts`` times with exponential backoff; an auth failure never is (brokers
    block IPs after repeated failed logins, DESIGN.md). Never raises for a failed login: the
    failure is the outcome. The result holds no password.
    """
    started_at = utc_now()
    clock = time.monotonic()
    holder = sync_id
    leased = False
    details: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + lease_wait_s
        while not (leased := await in_db(store.acquire_sync_lease, account_id, holder,
                                         lease_ttl_s)):
            if time.monotonic() >= deadline:
                raise SyncError(f"another sync of this account is still running after "
                                f"waiting {lease_wait_s:g}s", code="sync_in_progress")
            await asyncio.sleep(1.0)
        if keeper is not None:
            keeper.hold(holder)
        account = await in_db(store.get_account, account_id)
        if account is None:
            raise InvalidRequest(f"account {account_id} does not exist",
                                 code="account_not_found")
        request = FetchRequest(
            account_id=account_id,
            credentials=Credentials(
                login=account.login_number, server=account.broker_server,
                password=decrypt_password(account.investor_password_encrypted, await key()),
            ),
            date_from=None, date_to=None, fetch_positions=False,
            as_of_utc=started_at.isoformat(),
        )
        for attempt in range(1, attempts + 1):
            try:
                result = await fetch(request)
                break
            except SyncError as exc:
                if not is_transient(exc) or attempt == attempts:
                    raise
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        del request  # the only object holding the plaintext
        info = result.account_info or {}
        details = {"account_info": {k: info.get(k) for k in ACCOUNT_INFO_FIELDS if k in info},
                   "terminal_ms": result.terminal_ms}
        status, code, message = "success", None, None
    except Exception as exc:
        status = "failed"
        code, message = describe_error(exc)
    finally:
        if keeper is not None:
            keeper.drop(holder)
        if leased:
            with contextlib.suppress(Exception):  # the lease expires by itself
                await in_db(store.release_sync_lease, account_id, holder)
    completed = utc_now()
    entry = {
        "sync_id": sync_id,
        "account_id": account_id,
        "flow_run_id": flow_run_id,
        "status": status,
        "error_code": code,
        "error_message": message,
        "started_at": started_at.isoformat(),
        "completed_at": completed.isoformat(),
        "duration_ms": max(0, round((time.monotonic() - clock) * 1000)),
        "details": details,
    }
    await in_db(store.finish_verify_sync, entry)
    entry["connection_status"] = connection_status(status, code)
    return entry
