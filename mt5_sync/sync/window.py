"""Which slice of history one sync reads.

Incremental syncs re-read an overlap before the cursor: deals can arrive late or change type
after the fact, and upserts on (account_id, ticket) make the overlap harmless. ``date_to`` is
generous (server now + 1 day) because the server's clock is ahead of UTC by two or three hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mt5_sync.servertime import ServerTimeRule

#: Where "the whole history" starts: before any MT5 (2010) account's first deal.
FULL_HISTORY_FROM_UTC = datetime(2000, 1, 1, tzinfo=UTC)


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
    ledger_gap: bool = False,
) -> FetchWindow:
    """A never-synced account, or a full sync, reads ``initial_history_days`` (or from
    ``full_from_utc`` for backfills); otherwise from the cursor minus the overlap.

    ``ledger_gap`` (the last commit found the stored deals do not reproduce the balance, see
    supabase/migrations/20261203000200_ledger_reconciliation.sql): the whole history is read
    again, from :data:`FULL_HISTORY_FROM_UTC` -- the missing or changed deal can be of any
    age (a deal cancelled after the fact keeps its old time) -- until the ledger closes.
    """
    rule = ServerTimeRule.parse(time_rule)
    if ledger_gap:
        sync_type = "full"
        start = min(full_from_utc or FULL_HISTORY_FROM_UTC, FULL_HISTORY_FROM_UTC)
    elif requested_type == "full" or history_cursor is None:
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
