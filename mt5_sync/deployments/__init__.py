"""Deployment helpers: the work pool (``bootstrap``), backfill runs, the pull step (``steps``)."""
