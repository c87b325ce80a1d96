"""The transform step: raw MT5 records -> validated rows -> the commit payload.

A plain async helper, not a task of its own: ``commit-account-sync`` runs it right before the
write (one task run fewer per account). It runs in the database thread pool because pandas /
pandera validation is CPU work that must not stall the event loop the other subflows share.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mt5_sync.clock import utc_now
from mt5_sync.contracts import CommitPayload, FetchResult
from mt5_sync.sync import timing
from mt5_sync.tasks import runtime
from mt5_sync.transform.payload import SyncContext, build_commit_payload

#: the bulky row lists of a CommitPayload (everything else is its small header)
PAYLOAD_ROW_KEYS = frozenset(
    {"deals", "cash_flows", "closed_trades", "open_positions", "quarantine", "account", "snapshot"}
)


async def build_payload(fetched: dict[str, Any], context: dict[str, Any]) -> CommitPayload:
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
    with timing.timed(ctx.sync_id, "transform_ms"):
        payload, _report = await runtime.in_db_thread(
            build_commit_payload, result, ctx, completed_at=utc_now()
        )
    return payload
