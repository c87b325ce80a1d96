"""``sync_account``: one account, fetch -> validate/transform -> commit.

A failing account returns a Failed state carrying its outcome instead of raising, so the
parent cycle gets every account's result and one account never stops the others; the run
still shows as Failed in the UI, named after the account.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff

from mt5_sync.sync.steps import failure_outcome, failure_payload, success_outcome
from tasks import runtime
from tasks.database import (
    acquire_sync_lease,
    commit_account_sync,
    mark_sync_started,
    record_sync_failure,
)
from tasks.terminal import fetch_account_snapshot
from tasks.transform import transform_account_data


@flow(name="sync-account", flow_run_name="sync-{account_label}", log_prints=False)
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
) -> State[Any]:
    logger = get_run_logger()
    settings = runtime.settings()
    context: dict[str, Any] = {
        "sync_id": sync_id or str(uuid.uuid4()),
        "account_id": account_id,
        "execution_id": execution_id,
        "flow_run_id": flow_run.get_id(),
        "trigger": trigger,
        "sync_type": sync_type,
        "started_at": datetime.now(UTC).isoformat(),
    }
    context["lease_holder"] = context["sync_id"]
    fetch = fetch_account_snapshot.with_options(
        retries=settings.fetch_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.retry_backoff_s),
        retry_jitter_factor=settings.retry_jitter_factor,
    )
    try:
        await acquire_sync_lease(
            account_id, context["lease_holder"], settings.lease_ttl_s, settings.lease_wait_s
        )
        await mark_sync_started(context)
        fetched = await fetch(
            account_id, context["sync_id"], sync_type, full_from, sync_history, history_days
        )
        payload = await transform_account_data(fetched, context)
        committed = await commit_account_sync(payload)
    except Exception as exc:
        outcome = failure_outcome(context, exc)
        logger.error("sync of %s failed: %s", account_label, outcome.error_message)
        await record_sync_failure(failure_payload(outcome, context))
        return Failed(message=outcome.error_message, data=outcome.to_dict())
    outcome = success_outcome(context, fetched, payload, committed)
    logger.info(
        "%s: %s, %d trades, %d deals", account_label, outcome.status,
        outcome.trades_synced, outcome.deals_synced,
    )
    return Completed(message=outcome.status, data=outcome.to_dict())

