"""Request and response bodies of the manual sync API (they are the OpenAPI schema).

The request model is strict and closed (``extra="forbid"``, no string-to-bool or float-to-int
coercion): a typo such as ``"histroy_days"`` or ``"sync_history": "no"`` is a 422 naming the
field, not a silently different sync.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mt5_sync.servertime import ServerTimeRule

SyncType = Literal["full", "incremental"]
#: A sync_logs row's type: the two a caller can request, and the API's own verify syncs.
LoggedSyncType = Literal["full", "incremental", "verify"]
ConnectionStatusValue = Literal[
    "verifying", "connected", "auth_failed", "otp_required", "server_unreachable", "error",
    "unverified",
]
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
    sync_type: LoggedSyncType
    requested_at: datetime = Field(description="When the row was created (request time).")
    started_at: datetime = Field(description="When the sync itself started.")
    completed_at: datetime | None = None
    duration_ms: int | None = None
    trades_synced: int = 0
    deals_synced: int = 0
    error_code: str | None = None
    error_message: str | None = None
    flow_run_id: UUID | None = None


_PASSWORD = Field(
    min_length=1, max_length=128,
    description="The account's investor (read-only) password. Sealed to the terminal hosts' "
    "public key before it is stored; never logged or returned.",
    json_schema_extra={"format": "password", "writeOnly": True},
)


class AccountConnect(BaseModel):
    """A new MT5 account: login, trade server, investor password."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"login": 51234567, "server": "ICMarketsSC-Demo",
                                         "investor_password": "********"}]},
    )

    login: int = Field(ge=1, le=2**63 - 1, description="The MT5 account number.")
    server: str = Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$",
                        description="Trade server name exactly as the terminal shows it.")
    investor_password: SecretStr = _PASSWORD
    server_time_rule: str = Field(
        default="ny+7", max_length=32,
        description="How the server's wall clock maps to UTC: 'utc', 'fixed:+H' or 'ny+H' "
        "(most brokers: ny+7).")

    @field_validator("server_time_rule")
    @classmethod
    def _rule(cls, value: str) -> str:
        return str(ServerTimeRule.parse(value))


class AccountCredentials(BaseModel):
    """A replacement investor password."""

    model_config = ConfigDict(extra="forbid", strict=True)

    investor_password: SecretStr = _PASSWORD


class VerifyStarted(BaseModel):
    """201 (connect) / 202 (new credentials): the account is stored, its verify sync queued.
    Poll GET /api/mt5/accounts/{account_id} (or /api/mt5/sync/{sync_id})."""

    account_id: UUID
    sync_id: UUID = Field(description="The verify sync's id.")
    status: Literal["verifying"] = "verifying"
    flow_run_id: UUID | None = Field(
        default=None, description="The Prefect flow run (absent when started via an event)."
    )


class VerifySummary(BaseModel):
    sync_id: UUID
    status: SyncStatusValue
    error_code: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None


class AccountStatus(BaseModel):
    """One of the caller's active accounts and its connection status.

    ``status``, from the latest verify sync: verifying (running), connected (login and
    account check passed), auth_failed (wrong login/password/server: fix with PUT
    .../credentials), otp_required (the account needs OTP/a certificate, which the MT5 API
    cannot give: use an investor password without OTP), server_unreachable (the terminal could
    not get through: transient, retried by the next sync), error (anything else, see
    verify.error_message), unverified (added outside the API)."""

    account_id: UUID
    login: int
    server: str
    broker_name: str | None = None
    currency: str | None = None
    leverage: int | None = None
    status: ConnectionStatusValue
    verify: VerifySummary | None = None
    created_at: datetime
    last_sync_at: datetime | None = None
    last_successful_sync_at: datetime | None = None


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
