"""The endpoints: request a manual sync and look one up; connect, re-key, show and deactivate
an account (below, "account lifecycle").

Accept path, in order (each step decides before the next one costs anything):

1. API key, then JWT (:mod:`mt5_sync.api.auth`) -- before the body is looked at.
2. One database call claims the account's slot *and* writes the 'processing' sync_logs row
   (``mt5_claim_manual_sync``): ownership + rate limit in one atomic UPDATE.
3. Prefect gets the run (idempotency key = sync_id). If it cannot be reached, the claim is
   released (slot back, row removed) and the caller gets 503: nothing is half-done.

Unknown, inactive, other users' and malformed ids all answer the same 404, so the API never
confirms that someone else's account or sync exists.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Body, HTTPException, Path, Request, Security, status
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from mt5_sync.api.auth import Authenticator, User
from mt5_sync.api.models import (
    AccountConnect,
    AccountCredentials,
    AccountStatus,
    Problem,
    RateLimited,
    SyncAccepted,
    SyncRequest,
    SyncStatus,
    ValidationProblem,
    VerifyStarted,
)
from mt5_sync.api.orchestrator import ManualSyncRun, Orchestrator, OrchestratorUnavailable
from mt5_sync.credentials import encrypt_password
from mt5_sync.store.postgres import PostgresStore
from mt5_sync.sync.connection import connection_status

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter(prefix="/api/mt5")

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                        description="The service's shared API key.")
_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT",
                     description="The signed-in user's Supabase access token.")

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing/invalid API key or token."},
    403: {"model": Problem, "description": "Token is not a signed-in user's (role)."},
    404: {"model": Problem, "description": "No such active account/sync of this user."},
    422: {"model": ValidationProblem, "description": "Invalid request body."},
    503: {"model": Problem, "description": "Database, JWKS or Prefect unavailable; "
          "nothing was started, retry after Retry-After seconds."},
}
_NOT_FOUND = "not found"
_UUID_PATH = {"format": "uuid"}


async def current_user(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    """API key first (cheap, constant time), then the token.

    Verification is CPU-only and runs on the event loop, except when the token's key may
    have to be fetched from the JWKS (a blocking HTTP call): that one goes to a thread.
    """
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.check_api_key(api_key)
    token = credentials.credentials if credentials else None
    if authenticator.may_fetch_keys(token):
        return await run_in_threadpool(authenticator.verify_token, token)
    return authenticator.verify_token(token)


async def _in_db_thread(request: Request, fn: Callable[..., T], **kwargs: Any) -> T:
    """Run a blocking store call in a thread, at most pool-size at once: more threads would
    only wait for a pooled connection while competing for the GIL with the event loop."""
    limiter: CapacityLimiter = request.app.state.db_limiter
    return await to_thread.run_sync(functools.partial(fn, **kwargs), limiter=limiter)


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=_NOT_FOUND)


@router.post(
    "/account/{account_id}/sync",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SyncAccepted,
    summary="Start a manual sync of one of the caller's accounts",
    responses={**_AUTH_RESPONSES, 400: {
        "model": Problem, "description": "The body could not be decoded (not UTF-8)."},
        429: {
        "model": RateLimited,
        "description": "A manual sync of this account was requested less than a window ago.",
        "headers": {"Retry-After": {"description": "Seconds until the next request can be "
                                    "accepted.", "schema": {"type": "integer"}}},
    }},
)
async def request_sync(
    request: Request,
    account_id: Annotated[str, Path(description="trading_accounts.id",
                                    json_schema_extra=_UUID_PATH)],
    user: Annotated[User, Security(current_user)],
    body: Annotated[SyncRequest | None, Body()] = None,
) -> Any:
    body = body or SyncRequest()
    store: PostgresStore = request.app.state.store
    orchestrator: Orchestrator = request.app.state.orchestrator
    config = request.app.state.config
    sync_id = str(uuid.uuid4())
    claim = await _in_db_thread(
        request, store.claim_manual_sync_slot, account_id=account_id, user_id=user.id,
        sync_id=sync_id, sync_type=body.sync_type, window_s=config.manual_sync_window_s,
        default_estimate_s=config.manual_sync_default_estimate_s,
    )
    if claim.get("outcome") == "rate_limited":
        retry_after = int(claim["retry_after_seconds"])
        return JSONResponse(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            content={"detail": "a manual sync of this account was requested less than "
                     f"{config.manual_sync_window_s} s ago", "retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
    if claim.get("outcome") != "claimed":
        raise _not_found()
    account_key = str(uuid.UUID(account_id))
    run = ManualSyncRun(
        account_id=account_key, sync_id=sync_id, sync_type=body.sync_type,
        sync_history=body.sync_history, history_days=body.history_days,
        account_label=str(claim.get("account_label") or account_key),
    )
    try:
        flow_run_id = await orchestrator.start(run)
    except Exception as exc:  # whatever went wrong, no run is known to exist: undo the claim
        reason = exc if isinstance(exc, OrchestratorUnavailable) else type(exc).__name__
        log.error("manual sync %s not started: %s; giving the slot back", sync_id, reason)
        try:
            await _in_db_thread(request, store.release_manual_sync_slot, sync_id=sync_id)
        except Exception:
            log.exception("could not release the slot of %s (it expires by itself)", sync_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the orchestrator is unavailable; nothing was started, retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    return SyncAccepted(
        sync_id=uuid.UUID(sync_id), estimated_duration_seconds=claim["estimated_duration_seconds"],
        account_id=uuid.UUID(account_key), sync_type=body.sync_type,
        flow_run_id=uuid.UUID(flow_run_id) if flow_run_id else None,
    )


@router.get(
    "/sync/{sync_id}",
    response_model=SyncStatus,
    summary="Status of one sync of the caller's accounts",
    responses=_AUTH_RESPONSES,
)
async def get_sync(
    request: Request,
    sync_id: Annotated[str, Path(description="The sync_id returned by the 202.",
                                 json_schema_extra=_UUID_PATH)],
    user: Annotated[User, Security(current_user)],
) -> Any:
    store: PostgresStore = request.app.state.store
    row = await _in_db_thread(request, store.get_sync_status, sync_id=sync_id,
                              user_id=user.id)
    if row is None:
        raise _not_found()
    return row


# ---------------------------------------------------------------- account lifecycle (issue 14)
#
# Connect / new credentials / status / deactivate. The password is sealed here, at the edge,
# to the terminal hosts' public key (MT5SYNC_CREDENTIALS_PUBLIC_KEY) and only the sealed text
# is stored; this process holds no key that opens it (create_app refuses to start with one).
# The verify sync is a run of the same sync-account flow as a manual sync (sync_type
# 'verify'), started through the same orchestrator; the plaintext is neither a flow parameter
# nor in any log line, response or event (tests/api/test_accounts_e2e.py greps them all).

_CONFLICT: dict[int | str, dict[str, Any]] = {409: {
    "model": Problem,
    "description": "The caller already has an active account with this server and login."}}


def _seal(request: Request, password: str) -> str:
    public_key: str | None = request.app.state.config.credentials_public_key
    if not public_key:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="account connection is not configured on this service (no public key)",
        )
    return encrypt_password(password, public_key)


async def _start_verify(request: Request, *, account_id: str, sync_id: str,
                        label: str) -> str | None:
    """Hand the verify run to Prefect; on failure, mark the verify row failed (the account
    and its new password stay: the caller retries PUT .../credentials) and answer 503."""
    orchestrator: Orchestrator = request.app.state.orchestrator
    run = ManualSyncRun(account_id=account_id, sync_id=sync_id, sync_type="verify",
                        sync_history=False, history_days=1, account_label=label)
    try:
        return await orchestrator.start(run)
    except Exception as exc:
        reason = exc if isinstance(exc, OrchestratorUnavailable) else type(exc).__name__
        log.error("verify sync %s not started: %s", sync_id, reason)
        store: PostgresStore = request.app.state.store
        try:
            await _in_db_thread(request, store.finish_verify_sync, entry={
                "sync_id": sync_id, "status": "failed", "error_code": "orchestrator_unavailable",
                "error_message": "the verify sync could not be started; send the credentials "
                "again (PUT .../credentials)", "duration_ms": 0})
        except Exception:
            log.exception("could not mark verify sync %s failed", sync_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the orchestrator is unavailable; the account is stored but not verified, "
            "send the credentials again shortly (PUT .../credentials)",
            headers={"Retry-After": "5"},
        ) from None


def _verify_started(account_id: str, sync_id: str, flow_run_id: str | None) -> VerifyStarted:
    return VerifyStarted(account_id=uuid.UUID(account_id), sync_id=uuid.UUID(sync_id),
                         flow_run_id=uuid.UUID(flow_run_id) if flow_run_id else None)


@router.post(
    "/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=VerifyStarted,
    summary="Connect an MT5 account and verify its login",
    responses={**_AUTH_RESPONSES, **_CONFLICT},
)
async def connect_account(
    request: Request,
    user: Annotated[User, Security(current_user)],
    body: Annotated[AccountConnect, Body()],
) -> Any:
    store: PostgresStore = request.app.state.store
    sealed = _seal(request, body.investor_password.get_secret_value())
    sync_id = str(uuid.uuid4())
    row = await _in_db_thread(
        request, store.connect_account, user_id=user.id, login_number=body.login,
        broker_server=body.server, password_encrypted=sealed,
        server_time_rule=body.server_time_rule, sync_id=sync_id,
    )
    if row.get("outcome") == "duplicate":
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail="an active account with this server and login exists")
    account_id = str(row["account_id"])
    flow_run_id = await _start_verify(request, account_id=account_id, sync_id=sync_id,
                                      label=str(row["account_label"]))
    return _verify_started(account_id, sync_id, flow_run_id)


@router.put(
    "/accounts/{account_id}/credentials",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VerifyStarted,
    summary="Replace an account's investor password and verify it again",
    responses={**_AUTH_RESPONSES, 429: {
        "model": RateLimited,
        "description": "The account was verified less than a window ago (the manual-sync "
        "window): every verify is a broker login, and failed ones get IPs blocked.",
        "headers": {"Retry-After": {"description": "Seconds until the next request can be "
                                    "accepted.", "schema": {"type": "integer"}}},
    }},
)
async def replace_credentials(
    request: Request,
    account_id: Annotated[str, Path(description="trading_accounts.id",
                                    json_schema_extra=_UUID_PATH)],
    user: Annotated[User, Security(current_user)],
    body: Annotated[AccountCredentials, Body()],
) -> Any:
    store: PostgresStore = request.app.state.store
    sealed = _seal(request, body.investor_password.get_secret_value())
    sync_id = str(uuid.uuid4())
    window_s = request.app.state.config.manual_sync_window_s
    row = await _in_db_thread(request, store.replace_account_credentials,
                              account_id=account_id, user_id=user.id,
                              password_encrypted=sealed, sync_id=sync_id, window_s=window_s)
    if row.get("outcome") == "rate_limited":
        retry_after = int(row["retry_after_seconds"])
        return JSONResponse(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            content={"detail": f"this account was verified less than {window_s} s ago; every "
                     "verify is a login at the broker", "retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
    if row.get("outcome") != "replaced":
        raise _not_found()
    account_key = str(uuid.UUID(account_id))
    flow_run_id = await _start_verify(request, account_id=account_key, sync_id=sync_id,
                                      label=str(row["account_label"]))
    return _verify_started(account_key, sync_id, flow_run_id)


@router.get(
    "/accounts/{account_id}",
    response_model=AccountStatus,
    summary="One of the caller's accounts and its connection status",
    responses=_AUTH_RESPONSES,
)
async def get_account(
    request: Request,
    account_id: Annotated[str, Path(description="trading_accounts.id",
                                    json_schema_extra=_UUID_PATH)],
    user: Annotated[User, Security(current_user)],
) -> Any:
    store: PostgresStore = request.app.state.store
    row = await _in_db_thread(request, store.get_account_status, account_id=account_id,
                              user_id=user.id)
    if row is None:
        raise _not_found()
    verify = None
    if row["verify_sync_id"] is not None:
        verify = {"sync_id": row["verify_sync_id"], "status": row["verify_status"],
                  "error_code": row["verify_error_code"],
                  "error_message": row["verify_error_message"],
                  "completed_at": row["verify_completed_at"]}
    return AccountStatus(
        account_id=row["account_id"], login=row["login"], server=row["server"],
        broker_name=row["broker_name"], currency=row["currency"], leverage=row["leverage"],
        status=connection_status(row["verify_status"], row["verify_error_code"]),
        verify=verify,  # type: ignore[arg-type]
        created_at=row["created_at"], last_sync_at=row["last_sync_at"],
        last_successful_sync_at=row["last_successful_sync_at"],
    )


@router.delete(
    "/accounts/{account_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Deactivate an account (it leaves every sync; its history is kept)",
    responses=_AUTH_RESPONSES,
)
async def deactivate_account(
    request: Request,
    account_id: Annotated[str, Path(description="trading_accounts.id",
                                    json_schema_extra=_UUID_PATH)],
    user: Annotated[User, Security(current_user)],
) -> None:
    store: PostgresStore = request.app.state.store
    if not await _in_db_thread(request, store.deactivate_account, account_id=account_id,
                               user_id=user.id):
        raise _not_found()
