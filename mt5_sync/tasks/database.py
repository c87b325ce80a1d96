"""Database tasks: load accounts, commit a sync, record a failure; the account claim (lease +
log row) the fetch and commit tasks share."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from mt5_sync.contracts import FailurePayload
from mt5_sync.errors import SyncError
from mt5_sync.sync import timing
from mt5_sync.tasks import runtime
from mt5_sync.tasks.orchestration import final_flow_runs
from mt5_sync.tasks.policy import retry_transient
from mt5_sync.tasks.transform import PAYLOAD_ROW_KEYS, build_payload


def db_task(name: str) -> Any:
    """Database tasks retry dropped connections (backoff + jitter), never constraint errors."""
    return task(
        name=name,
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=1.0),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_transient,
        cache_policy=NO_CACHE,
        # Nothing reads these results back: writing them to result storage is pure overhead.
        persist_result=False,
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


async def claim_account(context: dict[str, Any], ttl_s: int, wait_s: float) -> None:
    """Hold the account's lease, then write the sync's 'processing' log row.

    Not a task of its own (a task run costs the Prefect server 30-45 ms of CPU per account, see
    docs/benchmarks.md): the fetch task calls it first, and the commit task calls it again
    when the fetch came from cache. The lease lives in the database, so a manual run on
    another worker and the scheduled cycle agree. It is short (``ttl_s``) and this process
    renews it while the sync runs (:mod:`mt5_sync.sync.leases`), so a dead holder frees the
    account within one TTL; a holder whose flow run Prefect reports final is broken at once.
    Otherwise this waits (bounded by ``wait_s``) for the other sync to finish. Re-claiming by
    the same holder extends the lease; the log row is an upsert: both are safe to repeat.
    Starting the sync closes the account's abandoned 'processing' rows (mt5_mark_sync_started).
    """
    store = runtime.store()
    sync_id, account_id, holder = context["sync_id"], context["account_id"], context["lease_holder"]
    deadline = time.monotonic() + wait_s
    checked: set[str] = set()
    while True:
        with timing.timed(sync_id, "db_ms"):
            granted = await runtime.in_db_thread(
                store.acquire_sync_lease, account_id, holder, ttl_s
            )
        if granted:
            break
        lease = await runtime.in_db_thread(store.sync_lease_of, account_id) or {}
        other_run = lease.get("flow_run_id")
        if other_run and other_run not in checked:
            checked.add(other_run)
            if await final_flow_runs([other_run]):
                # Prefect says the holder's run is over (crashed, cancelled): take over now.
                await runtime.in_db_thread(store.break_sync_lease, account_id, lease["holder"])
                continue
        if time.monotonic() >= deadline:
            raise SyncAlreadyRunning(
                f"another sync of this account is still running after waiting {wait_s:g}s"
            )
        await asyncio.sleep(1.0)
    runtime.lease_keeper().hold(holder)
    with timing.timed(sync_id, "db_ms"):
        await runtime.in_db_thread(store.mark_sync_started, context)


@db_task("commit-account-sync")
async def commit_account_sync(
    fetched: dict[str, Any], context: dict[str, Any], reclaim: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate/transform the fetched records, then write them in ONE transaction.

    Balances, positions, deals, trades, cash flows, cursor and log row. Invalid records are
    quarantined into the payload (and turn the sync partial). The transform runs here rather
    than in a task of its own (one task run fewer per account): it is deterministic, and what
    it reads (the fetch) is cached, so a retried commit never goes back to the terminal.
    ``reclaim`` (``{"ttl_s", "wait_s"}``) when the fetch came from cache: that run of the
    fetch task claimed the account, this one did not, so the lease is taken again first.
    Returns the payload's header (status, times, error) and what the database function said.
    """
    if reclaim is not None:
        await claim_account(context, reclaim["ttl_s"], reclaim["wait_s"])
    payload = await build_payload(fetched, context)
    with timing.timed(context["sync_id"], "commit_ms"):
        committed = await runtime.in_db_thread(runtime.store().commit_account_sync, payload)
    header = {k: v for k, v in payload.items() if k not in PAYLOAD_ROW_KEYS}
    # The database has the last word on the status: its ledger check can turn a sync partial.
    for key in ("status", "error_code", "error_message"):
        if key in committed:
            header[key] = committed[key]
    return {"payload": header, "committed": committed}


@db_task("record-sync-failure")
async def record_sync_failure(payload: FailurePayload) -> None:
    """Small separate transaction: the main one rolled back (or never ran)."""
    await runtime.in_db_thread(runtime.store().record_sync_failure, payload)


@db_task("load-duration-estimates")
async def load_duration_estimates(account_ids: list[str], last: int) -> dict[str, float]:
    """account id -> median duration (ms) of its last ``last`` finished syncs (if any)."""
    rows = await runtime.in_db_thread(
        runtime.store().sync_duration_estimates, account_ids, last
    )
    return {
        str(r["account_id"]): float(r["median_ms"])
        for r in rows or []
        if r.get("median_ms") is not None
    }


@db_task("record-deferred-syncs")
async def record_deferred_syncs(entry: dict[str, Any]) -> int:
    """One 'deferred' sync_logs row per account the cycle did not start (one call)."""
    return await runtime.in_db_thread(runtime.store().record_syncs_deferred, entry)
