"""mt5-sync: plain modules (no Prefect imports), and the Prefect layer that orchestrates them.

The Prefect layer is ``mt5_sync.flows`` (orchestration only), ``mt5_sync.tasks`` (tasks with
their retries and caching) and ``mt5_sync.deployments`` (work pool, backfill, pull step). It
lives inside this package so that installing mt5-sync adds one import name to an
environment, never generic ones like ``flows`` or ``tasks``; the repository's top-level
``flows/``, ``tasks/`` and ``deployments/`` folders hold the files prefect.yaml and people
point at, which import from here.
"""
