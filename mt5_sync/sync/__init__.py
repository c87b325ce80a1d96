"""Plain sync logic (no Prefect): fetch windows, outcomes and the cycle summary."""
