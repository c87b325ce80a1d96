"""Prefect flows: orchestration only — which tasks run, in what order, how many at once."""
