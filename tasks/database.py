"""The database tasks; defined in :mod:`mt5_sync.tasks.database`."""

from mt5_sync.tasks.database import (
    commit_account_sync,
    load_active_accounts,
    load_duration_estimates,
    record_deferred_syncs,
    record_sync_failure,
)

__all__ = [
    "commit_account_sync",
    "load_active_accounts",
    "load_duration_estimates",
    "record_deferred_syncs",
    "record_sync_failure",
]
