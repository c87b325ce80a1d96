"""``sync_account``: one account, claim (lease + log row) + fetch (cached) -> transform + commit.

Two task runs per account, on purpose: each task run costs the Prefect server 30-45 ms of
CPU and the worker ~10 ms (scripts/bench_prefect_floor.py, docs/benchmarks.md), so the steps
are grouped where nothing is lost — the fetch stays its own task because its result is what
must be cached (a retried commit, or a retried cycle, never goes back to the terminal), the
claim rides in it, and retries stay per step with backoff and jitter on transient faults only.
When the fetch comes from cache (a rerun of the same sync), its claim did not run now, so the
commit re-claims.

A failing account returns a Failed state carrying its outcome instead of raising, so the
parent cycle gets every account's result and one account never stops the others; the run
still shows as Failed in the UI, named after the account.

``sync_type='verify'`` (an account connected or re-keyed through the API) takes another path:
one task that logs in, checks login/server and reads account_info, and writes no data
(:mod:`mt5_sync.sync.connection`).
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from mt5_sync.clock import utc_now
from mt5_sync.sync import timing
from mt5_sync.sync.steps import failure_outcome, failure_payload, success_outcome
from mt5_sync.tasks import runtime
from mt5_sync.tasks.database import commit_account_sync, record_sync_failure
from mt5_sync.tasks.terminal import fetch_account_snapshot, verify_account_login

VERIFY = "verify"


async def _verify(account_id: str, sync_id: str | None, account_label: str) -> State[Any]:
    """sync_type 'verify' (issue 14): login + login/server check + account_info, no data.

    Its 'processing' row was written with the account by the API (mt5_connect_account), so
    a sync_id is required; the outcome goes to that row (mt5_finish_verify_sync)."""
    if not sync_id:
        raise ValueError("a verify sync needs the sync_id the API created")
    outcome = await verify_account_login(account_id, sync_id, flow_run.get_id())
    get_run_logger().info("verify of %s: %s", account_label, outcome["connection_status"])
    if outcome["status"] != "success":
        return Failed(message=outcome["error_message"], data=outcome)
    return Completed(message=outcome["connection_status"], data=outcome)


@flow(
    name="sync-account",
    flow_run_name="sync-{account_label}",
    log_prints=False,
    # The outcome goes to sync_logs and back to the caller in memory; persisting it would
    # only write a file per account (nothing reads it back).
    persist_result=False,
)
async def sync_account(
    account_id: str,
    trigger: str = "manual",
    sync_type: str = "incremental",
    sync_id: str | None = None,
    execution_id: str | None = None,
    account_label: str = "account",
    full_from: str | None = None,
    sync_history: bool = True,
    history_days: int | None = None,
    lease_holder: str | None = None,
) -> State[Any]:
    logger = get_run_logger()
    if sync_type == VERIFY:
        return await _verify(account_id, sync_id, account_label)
    settings = runtime.settings()
    context: dict[str, Any] = {
        "sync_id": sync_id or str(uuid.uuid4()),
        "account_id": account_id,
        "execution_id": execution_id,
        "flow_run_id": flow_run.get_id(),
        "trigger": trigger,
        "sync_type": sync_type,
        "started_at": utc_now().isoformat(),
    }
    # A cycle's shard claimed the account under its own lease holder; alone, the sync is one.
    context["lease_holder"] = lease_holder or context["sync_id"]
    fetch = fetch_account_snapshot.with_options(
        retries=settings.fetch_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.retry_backoff_s),
        retry_jitter_factor=settings.retry_jitter_factor,
    )
    lease = {"ttl_s": settings.lease_ttl_s, "wait_s": settings.lease_wait_s}
    claim_id = str(uuid.uuid4())  # new on every execution of this body, retries included
    try:
        fetched = await fetch(
            account_id, context["sync_id"], sync_type, full_from, sync_history, history_days,
            claim={"context": context, "claim_id": claim_id, **lease},
        )
        # A fetch served from cache carries the claim id of the run that made it: this run
        # has not claimed the account yet, so the commit does.
        reclaim = lease if fetched.get("claim_id") != claim_id else None
        # quote(): the fetched records can be thousands of rows; Prefect would otherwise walk
        # every one of them twice per task call looking for futures (measured: a third of the
        # flow process's CPU before this change).
        written = await commit_account_sync(quote(fetched), context, reclaim)
    except Exception as exc:
        outcome = failure_outcome(context, exc)
        logger.error("sync of %s failed: %s", account_label, outcome.error_message)
        outcome.timings = timing.pop(context["sync_id"])
        await record_sync_failure(failure_payload(outcome, context))
        runtime.lease_keeper().drop(context["lease_holder"])  # released by the failure record
        return Failed(message=outcome.error_message, data=outcome.to_dict())
    runtime.lease_keeper().drop(context["lease_holder"])  # the commit released it
    outcome = success_outcome(context, fetched, written["payload"], written["committed"])
    outcome.timings = timing.pop(context["sync_id"])
    outcome.commit_ms = round(outcome.timings.get("commit_ms", 0))
    logger.info(
        "%s: %s, %d trades, %d deals",
        account_label,
        outcome.status,
        outcome.trades_synced,
        outcome.deals_synced,
    )
    return Completed(message=outcome.status, data=outcome.to_dict())
