"""Which slice of history one sync reads.

Incremental syncs re-read an overlap before the cursor: deals can arrive late or change type
after the fact, and upserts on (account_id, ticket) make the overlap harmless. ``date_to`` is
generous (server now + 1 day) because the server's clock is ahead of UTC by two or three hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mt5_sync.servertime import ServerTimeRule


@dataclass(frozen=True)
class FetchWindow:
    sync_type: str  # what actually runs: "full" or "incremental"
    from_utc: datetime
    to_utc: datetime
    date_from_server: int
    date_to_server: int


def plan_fetch_window(
    *,
    requested_type: str,
    history_cursor: datetime | None,
    time_rule: str,
    now_utc: datetime,
    initial_history_days: int,
    overlap_hours: float,
    full_from_utc: datetime | None = None,
) -> FetchWindow:
    """A never-synced account, or a full sync, reads ``initial_history_days`` (or from
    ``full_from_utc`` for backfills); otherwise from the cursor minus the overlap."""
    rule = ServerTimeRule.parse(time_rule)
    if requested_type == "full" or history_cursor is None:
        sync_type = "full"
        start = full_from_utc or now_utc - timedelta(days=initial_history_days)
    else:
        sync_type = "incremental"
        start = history_cursor - timedelta(hours=overlap_hours)
    end = now_utc + timedelta(days=1)
    return FetchWindow(
        sync_type=sync_type,
        from_utc=start,
        to_utc=end,
        date_from_server=rule.to_server_epoch(start),
        date_to_server=rule.to_server_epoch(end),
    )
