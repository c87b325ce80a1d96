"""Transform task: raw MT5 records -> validated rows -> the commit payload."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mt5_sync.contracts import CommitPayload, FetchResult
from mt5_sync.transform.payload import SyncContext, build_commit_payload
from tasks import runtime


@task(name="transform-account-data", cache_policy=NO_CACHE)
async def transform_account_data(
    fetched: dict[str, Any], context: dict[str, Any]
) -> CommitPayload:
    """Invalid records are quarantined into the payload (and turn the sync partial)."""
    ctx = SyncContext(
        sync_id=context["sync_id"],
        account_id=context["account_id"],
        execution_id=context.get("execution_id"),
        flow_run_id=context.get("flow_run_id"),
        trigger=context["trigger"],
        sync_type=fetched["sync_type"],
        started_at=datetime.fromisoformat(context["started_at"]),
        time_rule=fetched["time_rule"],
        lease_holder=context.get("lease_holder"),
    )
    result = FetchResult.from_dict(fetched["fetch"])
    payload, _report = await runtime.in_db_thread(
        build_commit_payload, result, ctx, completed_at=datetime.now(UTC)
    )
    return payload
