"""What deploying mt5-sync needs beside prefect.yaml; the Python code is in
``mt5_sync/deployments/`` (installed with the package, so a worker can import the pull step).

- ``windows/run-worker.ps1``: starts the process worker on a Windows host.
- ``bootstrap.py``, ``backfill.py``: ``python -m deployments.bootstrap`` / ``.backfill``, run
  from the project folder, are the same commands as the documented
  ``python -m mt5_sync.deployments.bootstrap`` / ``.backfill`` (which work from anywhere).

This folder is not installed: an environment gets ``mt5_sync`` only.
"""
