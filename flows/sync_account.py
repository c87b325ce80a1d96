"""prefect.yaml entrypoint ``flows/sync_account.py:sync_account`` (deployment
``manual-sync``). The flow is :mod:`mt5_sync.flows.sync_account`."""

from mt5_sync.flows.sync_account import sync_account

__all__ = ["sync_account"]
