"""Plain records the store returns (no database driver import, so any layer may use them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AccountRecord:
    """One ``trading_accounts`` row as the sync needs it.

    Frozen and free of live objects, so it can cross threads and be pickled. The encrypted
    investor password is excluded from ``repr`` so a logged record never leaks it (encrypted or
    not, it is a credential). Datetimes are timezone-aware UTC.
    """

    id: str
    user_id: str
    login_number: int
    broker_server: str
    broker_name: str | None
    server_time_rule: str
    is_active: bool
    history_cursor: datetime | None
    last_sync_at: datetime | None
    last_successful_sync_at: datetime | None
    sync_failure_count: int
    investor_password_encrypted: str = field(repr=False)
    #: the last ledger reconciliation (``baseline`` / ``ok`` / ``gap`` / ``equity_drift``);
    #: ``gap`` makes the next sync re-read the whole history (mt5_sync.sync.window)
    ledger_status: str | None = None

    @property
    def label(self) -> str:
        """Human label used in flow-run names and logs: ``login@server``."""
        return f"{self.login_number}@{self.broker_server}"
