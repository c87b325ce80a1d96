"""``python -m deployments.bootstrap`` from the project folder; see
:mod:`mt5_sync.deployments.bootstrap` (``python -m mt5_sync.deployments.bootstrap``)."""

from mt5_sync.deployments.bootstrap import main

if __name__ == "__main__":
    raise SystemExit(main())
