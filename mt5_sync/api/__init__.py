"""Manual sync API: an authenticated webhook that starts the manual-sync Prefect deployment.

A small FastAPI service, deployed on its own (``python -m mt5_sync.api``); see
docs/manual-sync.md. It never runs a sync itself: it checks who asks, takes the account's
rate-limit slot in the database, and hands the run to Prefect.
"""

from mt5_sync.api.app import create_app

__all__ = ["create_app"]
