"""The terminal task; defined in :mod:`mt5_sync.tasks.terminal`."""

from mt5_sync.tasks.terminal import fetch_account_snapshot

__all__ = ["fetch_account_snapshot"]
