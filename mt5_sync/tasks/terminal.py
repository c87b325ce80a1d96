"""Terminal task: claim the account, then fetch its snapshot through the terminal pool.

Retried with exponential backoff and jitter on transient faults only; its result is cached
per ``sync_id`` so that a retried commit (or a retried run of the sync) never goes back to
the terminal for data it already has. The result holds no credentials.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from mt5_sync.clock import utc_now
from mt5_sync.contracts import Credentials, FetchRequest
from mt5_sync.credentials import decrypt_password
from mt5_sync.errors import InvalidRequest, TerminalUnavailable
from mt5_sync.secrets import aresolve_credentials_key
from mt5_sync.sync import timing
from mt5_sync.sync.connection import run_verify
from mt5_sync.sync.window import plan_fetch_window
from mt5_sync.tasks import runtime
from mt5_sync.tasks.database import claim_account
from mt5_sync.tasks.policy import retry_transient
from mt5_sync.terminal.session import TRANSIENT_PART_CODES


def _fetch_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"mt5-fetch-{parameters['account_id']}-{parameters['sync_id']}"


def _record_terminal_time(sync_id: str, queued_at: float, waited_ms: float) -> None:
    """Split the time since ``queued_at`` into the wait for a terminal and the fetch itself."""
    total_ms = (time.monotonic() - queued_at) * 1000
    timing.record(sync_id, "terminal_wait_ms", float(waited_ms))
    timing.record(sync_id, "fetch_ms", max(0.0, total_ms - waited_ms))


def _is_last_attempt() -> bool:
    ctx = TaskRunContext.get()
    if ctx is None:
        return True
    return ctx.task_run.run_count >= ctx.task.retries + 1


@task(
    name="fetch-account-snapshot",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_key_fn=_fetch_cache_key,
    cache_expiration=None,
    persist_result=True,
    # Read back from result storage when a retry needs it. Kept in memory, Prefect's
    # process-wide LRU of 1,000 result records held the last 1,000 accounts' raw deals
    # (measured: the flow process grew ~60 MB per 1,000 accounts; flat without it).
    cache_result_in_memory=False,
)
async def fetch_account_snapshot(
    account_id: str,
    sync_id: str,
    sync_type: str = "incremental",
    full_from: str | None = None,
    sync_history: bool = True,
    history_days: int | None = None,
    claim: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``claim`` (``{"context", "claim_id", "ttl_s", "wait_s"}``): take the account's lease
    and write the 'processing' log row first (:func:`mt5_sync.tasks.database.claim_account`);
    it is part of this task rather than a task of its own to save a task run per account. The
    result carries ``claim_id`` so a caller served from cache can tell it must claim again."""
    settings = runtime.settings()
    if claim is not None:
        await claim_account(claim["context"], claim["ttl_s"], claim["wait_s"])
    with timing.timed(sync_id, "db_ms"):
        account = await runtime.in_db_thread(runtime.store().get_account, account_id)
    if account is None:
        raise InvalidRequest(f"account {account_id} does not exist", code="account_not_found")
    as_of = utc_now()  # after the claim: the lease is ours, the window starts from here
    window = plan_fetch_window(
        requested_type=sync_type,
        history_cursor=account.history_cursor,
        time_rule=account.server_time_rule,
        now_utc=as_of,
        initial_history_days=history_days or settings.initial_history_days,
        overlap_hours=settings.history_overlap_hours,
        full_from_utc=datetime.fromisoformat(full_from) if full_from else None,
        ledger_gap=account.ledger_status == "gap",
    )
    key = await aresolve_credentials_key(settings)
    request = FetchRequest(
        account_id=account_id,
        credentials=Credentials(
            login=account.login_number,
            server=account.broker_server,
            password=decrypt_password(account.investor_password_encrypted, key),
        ),
        date_from=window.date_from_server if sync_history else None,
        date_to=window.date_to_server if sync_history else None,
        as_of_utc=as_of.isoformat(),
    )
    pool = runtime.terminals()
    # Queued for a terminal from here: the wait (behind other accounts of this cycle, or a
    # manual sync holding an install) is reported apart from the terminal's own work.
    queued_at = time.monotonic()
    try:
        result = await runtime.in_terminal_thread(pool.fetch, request, queued_at=queued_at)
    except BaseException as exc:  # a failed fetch reports its queueing too (pool.fetch)
        _record_terminal_time(sync_id, queued_at, getattr(exc, "slot_wait_ms", 0))
        raise
    _record_terminal_time(sync_id, queued_at, result.slot_wait_ms)
    transient = [e for e in result.errors if e.code in TRANSIENT_PART_CODES]
    if transient and not _is_last_attempt():
        # Try the whole fetch again while attempts remain; on the last one, commit what we
        # have and report the sync as partial.
        first = transient[0]
        raise TerminalUnavailable(f"{first.part}: {first.message}", mt5_code=first.mt5_code)
    return {
        "fetch": result.to_dict(),
        "sync_type": window.sync_type,
        "window_from_utc": window.from_utc.isoformat(),
        "window_to_utc": window.to_utc.isoformat(),
        "time_rule": account.server_time_rule,
        "login": account.login_number,
        "claim_id": claim["claim_id"] if claim is not None else None,
    }


async def warm_up_terminals() -> None:
    """Start every slot's worker process now, in parallel, instead of on each slot's first
    fetch (a cold worker costs seconds on a busy host; ten of them used to serialise the
    cycle's first wave). Failures are left for the fetches to report, per account."""
    import asyncio
    import logging

    try:
        await asyncio.to_thread(runtime.terminals().warm_up)
    except Exception as exc:  # reported again, per account, by the fetch that needs the slot
        logging.getLogger(__name__).warning("terminal warm-up failed: %s", exc)


@task(name="verify-account-login", cache_policy=NO_CACHE, persist_result=False)
async def verify_account_login(account_id: str, sync_id: str,
                               flow_run_id: str | None = None) -> dict[str, Any]:
    """A verify sync (:func:`mt5_sync.sync.connection.run_verify`): login, login/server
    check, account_info; no history. Retries transient faults itself, inside one task run (a
    task-level retry would re-run the lease wait too); never raises for a failed login."""
    settings = runtime.settings()
    pool = runtime.terminals()

    async def fetch(request: FetchRequest) -> Any:
        return await runtime.in_terminal_thread(pool.fetch, request)

    return await run_verify(
        account_id=account_id, sync_id=sync_id, flow_run_id=flow_run_id,
        store=runtime.store(), fetch=fetch,
        key=lambda: aresolve_credentials_key(settings),
        lease_ttl_s=settings.lease_ttl_s, lease_wait_s=settings.lease_wait_s,
        attempts=settings.fetch_retries + 1, backoff_s=settings.retry_backoff_s,
        in_db=runtime.in_db_thread, keeper=runtime.lease_keeper(),
    )
