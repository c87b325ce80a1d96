"""prefect.yaml entrypoint ``flows/sync_cycle_shard.py:sync_cycle_shard`` (deployment
``host-shard``). The flow is :mod:`mt5_sync.flows.sync_cycle_shard`."""

from mt5_sync.flows.sync_cycle_shard import sync_cycle_shard

__all__ = ["sync_cycle_shard"]
