"""Turn what the tasks returned (or raised) into an :class:`AccountOutcome`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mt5_sync.clock import utc_now
from mt5_sync.contracts import CommitPayload, FailurePayload
from mt5_sync.errors import SyncError
from mt5_sync.sync.outcome import AccountOutcome

MAX_ERROR_CHARS = 1000


def _elapsed_ms(started_at: str, completed_at: str) -> int:
    delta = datetime.fromisoformat(completed_at) - datetime.fromisoformat(started_at)
    return max(0, int(delta.total_seconds() * 1000))


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(code, message) for sync_logs and the response; unknown errors keep their type name."""
    if isinstance(exc, SyncError):
        return exc.code, exc.message[:MAX_ERROR_CHARS]
    return "internal_error", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def failure_outcome(context: dict[str, Any], exc: BaseException) -> AccountOutcome:
    code, message = describe_error(exc)
    completed = utc_now().isoformat()
    return AccountOutcome(
        account_id=context["account_id"],
        status="failed",
        started_at=context["started_at"],
        completed_at=completed,
        duration_ms=_elapsed_ms(context["started_at"], completed),
        error_message=message,
        error_code=code,
        sync_id=context["sync_id"],
        flow_run_id=context.get("flow_run_id"),
        sync_type=context.get("sync_type"),
        login=context.get("login"),
    )


def failure_payload(outcome: AccountOutcome, context: dict[str, Any]) -> FailurePayload:
    return {
        "sync_id": context["sync_id"],
        "account_id": context["account_id"],
        "execution_id": context.get("execution_id"),
        "flow_run_id": context.get("flow_run_id"),
        "trigger": context["trigger"],
        "sync_type": context.get("sync_type") or "incremental",
        "error_code": outcome.error_code or "internal_error",
        "error_message": outcome.error_message or "unknown error",
        "started_at": outcome.started_at,
        "completed_at": outcome.completed_at,
        "duration_ms": outcome.duration_ms,
        "lease_holder": context.get("lease_holder"),
    }


def success_outcome(
    context: dict[str, Any],
    fetched: dict[str, Any],
    payload: CommitPayload | Mapping[str, Any],
    committed: dict[str, Any],
) -> AccountOutcome:
    """``payload`` may be the commit payload or just its header (status, times, error)."""
    return AccountOutcome(
        account_id=context["account_id"],
        status=payload["status"],
        started_at=payload["started_at"],
        completed_at=payload["completed_at"],
        duration_ms=payload["duration_ms"],
        trades_synced=int(committed.get("trades_synced", 0)),
        deals_synced=int(committed.get("deals_synced", 0)),
        error_message=payload["error_message"],
        error_code=payload["error_code"],
        sync_id=context["sync_id"],
        flow_run_id=context.get("flow_run_id"),
        sync_type=payload["sync_type"],
        login=fetched.get("login"),
        terminal_ms=int(fetched["fetch"].get("terminal_ms", 0)),
    )
