"""The terminal tasks; defined in :mod:`mt5_sync.tasks.terminal`."""

from mt5_sync.tasks.terminal import fetch_account_snapshot, verify_account_login

__all__ = ["fetch_account_snapshot", "verify_account_login"]
