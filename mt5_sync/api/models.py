"""Request and response bodies of the manual sync API (they are the OpenAPI schema).

The request model is strict and closed (``extra="forbid"``, no string-to-bool or float-to-int
coercion): a typo such as ``"histroy_days"`` or ``"sync_history": "no"`` is a 422 naming the
field, not a silently different sync.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

SyncType = Literal["full", "incremental"]
SyncStatusValue = Literal["processing", "success", "partial", "failed", "deferred", "skipped"]


class SyncRequest(BaseModel):
    """What to sync. Every field is optional; an empty body means an incremental sync."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"sync_type": "incremental", "sync_history": True,
                                         "history_days": 30}]},
    )

    sync_type: SyncType = Field(
        default="incremental",
        description="full: re-read history_days of history; incremental: from the cursor.",
    )
    sync_history: bool = Field(default=True, description="Also read closed deals, not only "
                               "balances and open positions.")
    history_days: int = Field(default=30, ge=1, le=365, description="History to read (days).")


class SyncAccepted(BaseModel):
    """202: the sync is queued in Prefect; poll GET /api/mt5/sync/{sync_id}."""

    sync_id: UUID
    status: Literal["processing"] = "processing"
    estimated_duration_seconds: int = Field(
        description="Median of this account's last 10 successful syncs (default 30)."
    )
    account_id: UUID
    sync_type: SyncType
    flow_run_id: UUID | None = Field(
        default=None, description="The Prefect flow run (absent when started via an event)."
    )


class SyncStatus(BaseModel):
    """One sync's row in sync_logs."""

    sync_id: UUID
    account_id: UUID
    status: SyncStatusValue
    trigger: Literal["scheduled", "manual", "backfill"]
    sync_type: SyncType
    requested_at: datetime = Field(description="When the row was created (request time).")
    started_at: datetime = Field(description="When the sync itself started.")
    completed_at: datetime | None = None
    duration_ms: int | None = None
    trades_synced: int = 0
    deals_synced: int = 0
    error_code: str | None = None
    error_message: str | None = None
    flow_run_id: UUID | None = None


class Problem(BaseModel):
    """Every non-2xx answer."""

    detail: str


class RateLimited(Problem):
    retry_after_seconds: int


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """422: one entry per invalid field."""

    detail: list[ValidationIssue]
