"""Per-account outcomes and the cycle summary in the seed's response shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class AccountOutcome:
    """What one account's sync did — one entry of ``syncResults``."""

    account_id: str
    status: str  # success | partial | failed | deferred | skipped
    started_at: str
    completed_at: str
    duration_ms: int
    trades_synced: int = 0
    error_message: str | None = None
    error_code: str | None = None
    sync_id: str | None = None
    login: int | None = None
    flow_run_id: str | None = None
    sync_type: str | None = None
    deals_synced: int = 0
    terminal_ms: int = 0
    commit_ms: int = 0
    attempts: int = 1
    #: the host (work queue) whose terminals ran it; None for a lone manual sync
    host: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: where the account's time went (ms): db_ms, fetch_ms, transform_ms, commit_ms recorded
    #: by the tasks; slot_ms (time it held its slot) and prefect_ms (the rest) by the parent
    timings: dict[str, float] = field(default_factory=dict)

    def to_response(self) -> dict[str, Any]:
        """The seed's syncResults item (error_message only when there is one)."""
        item: dict[str, Any] = {
            "account_id": self.account_id,
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "duration_ms": self.duration_ms,
            "trades_synced": self.trades_synced,
        }
        if self.error_message:
            item["error_message"] = self.error_message
        item.update(
            sync_id=self.sync_id,
            flow_run_id=self.flow_run_id,
            login=self.login,
            sync_type=self.sync_type,
            deals_synced=self.deals_synced,
            terminal_ms=self.terminal_ms,
            commit_ms=self.commit_ms,
        )
        if self.host:
            item["host"] = self.host
        if self.timings:
            item["timings"] = {k: round(v, 1) for k, v in self.timings.items()}
        if self.error_code:
            item["error_code"] = self.error_code
        if self.status == "skipped":  # backed off (mt5_sync/sync/health.py): why, and until when
            item["state"] = self.extra.get("state")
            item["next_attempt_at"] = self.extra.get("next_attempt_at")
        return item

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_cycle(
    outcomes: list[AccountOutcome],
    *,
    execution_id: str,
    started: datetime,
    finished: datetime,
    max_in_flight: int | None = None,
    terminals: int | None = None,
    terminals_busy: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The Edge Function's response, kept field for field, plus what Prefect adds.

    ``maxInFlight``: most ``sync-account`` subflows running at once. ``terminals``: the cap on
    terminals in use; ``terminalsBusyPeak`` / ``terminalsBusyMean``: most terminals in use at
    once and the time-weighted mean over the cycle (from the terminal pool's own records).
    """
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in
              ("success", "failed", "partial", "deferred", "skipped")}
    summary: dict[str, Any] = {
        "success": True,
        "executionId": execution_id,
        "totalAccounts": len(outcomes),
        "successCount": counts["success"],
        "failureCount": counts["failed"],
        "partialCount": counts["partial"],
        "deferredCount": counts["deferred"],
        "skippedCount": counts["skipped"],
        "duration_ms": int((finished - started).total_seconds() * 1000),
        "syncResults": [o.to_response() for o in outcomes],
    }
    if not outcomes:
        summary["message"] = "No active accounts to sync"
    if max_in_flight is not None:
        summary["maxInFlight"] = max_in_flight
    if terminals is not None:
        summary["terminals"] = terminals
    if terminals_busy is not None:
        summary["terminalsBusyPeak"] = int(terminals_busy["peak"])
        summary["terminalsBusyMean"] = round(terminals_busy["mean"], 2)
    return summary


def summary_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the Prefect table artifact and the demo's printout."""
    return [
        {
            "account": r.get("login") or r["account_id"],
            "host": r.get("host") or "",
            "status": r["status"],
            "trades": r["trades_synced"],
            "deals": r.get("deals_synced", 0),
            "ms": r["duration_ms"],
            "error": (r.get("error_message") or "")[:120],
        }
        for r in summary["syncResults"]
    ]
