"""The flows' Prefect tasks; they are defined in ``mt5_sync/tasks/``.

- ``mt5_sync.tasks.terminal``: claim the account, fetch its snapshot (cached per sync).
- ``mt5_sync.tasks.database``: load accounts, commit a sync, record failures and deferrals.
- ``mt5_sync.tasks.transform``, ``policy``, ``runtime``: the transform step, the retry policy,
  and the process-wide resources (settings, store, terminal pool) the tasks share.

The files here re-export the tasks for readers who look in the top-level folder the design
names. Like ``flows/``, this folder is not installed: an environment gets ``mt5_sync`` only.
"""
