"""``python -m deployments.backfill`` from the project folder; see
:mod:`mt5_sync.deployments.backfill` (``python -m mt5_sync.deployments.backfill``)."""

from mt5_sync.deployments.backfill import main

if __name__ == "__main__":
    raise SystemExit(main())
