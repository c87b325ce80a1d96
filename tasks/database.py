"""Database tasks: load accounts, lease an account, commit a sync, record a failure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from mt5_sync.contracts import CommitPayload, FailurePayload
from mt5_sync.errors import SyncError
from tasks import runtime
from tasks.policy import retry_transient


def db_task(name: str) -> Any:
    """Database tasks retry dropped connections (backoff + jitter), never constraint errors."""
    return task(
        name=name,
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=1.0),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_transient,
        cache_policy=NO_CACHE,
    )


class SyncAlreadyRunning(SyncError):
    """Another sync holds this account's lease (a manual sync beside the scheduled cycle)."""

    code = "sync_in_progress"


@db_task("load-active-accounts")
async def load_active_accounts(account_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Active accounts, least recently synced first; ids and labels only (no credentials)."""
    accounts = await runtime.in_db_thread(runtime.store().list_active_accounts, account_ids)
    return [
        {
            "id": str(a.id),
            "login": a.login_number,
            "server": a.broker_server,
            "label": f"{a.login_number}@{a.broker_server}",
        }
        for a in accounts
    ]


@task(name="acquire-sync-lease", cache_policy=NO_CACHE)
async def acquire_sync_lease(account_id: str, holder: str, ttl_s: int, wait_s: float) -> None:
    """Wait (bounded) until no other sync of this account runs, then hold its lease.

    The lease lives in the database, so a manual run on another worker and the scheduled
    cycle agree; it expires on its own if a worker dies holding it.
    """
    store = runtime.store()
    deadline = time.monotonic() + wait_s
    while not await runtime.in_db_thread(store.acquire_sync_lease, account_id, holder, ttl_s):
        if time.monotonic() >= deadline:
            raise SyncAlreadyRunning(
                f"another sync of this account is still running after waiting {wait_s:g}s"
            )
        await asyncio.sleep(1.0)


@db_task("mark-sync-started")
async def mark_sync_started(entry: dict[str, Any]) -> None:
    await runtime.in_db_thread(runtime.store().mark_sync_started, entry)


@db_task("commit-account-sync")
async def commit_account_sync(payload: CommitPayload) -> dict[str, Any]:
    """One transaction: balances, positions, deals, trades, cash flows, cursor and log row."""
    return await runtime.in_db_thread(runtime.store().commit_account_sync, payload)


@db_task("record-sync-failure")
async def record_sync_failure(payload: FailurePayload) -> None:
    """Small separate transaction: the main one rolled back (or never ran)."""
    await runtime.in_db_thread(runtime.store().record_sync_failure, payload)
