"""Prefect tasks: thin wrappers around plain functions, carrying retries, timeouts and caching."""
