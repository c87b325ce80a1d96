"""prefect.yaml entrypoint ``flows/sync_trading_data.py:sync_trading_data`` (deployments
``scheduled-sync`` and ``backfill``). The flow is :mod:`mt5_sync.flows.sync_trading_data`."""

from mt5_sync.flows.sync_trading_data import sync_trading_data

__all__ = ["sync_trading_data"]
