"""Pull steps for prefect.yaml, run by the worker host when each flow run starts.

``set_project_working_directory`` replaces Prefect's ``set_working_directory`` with a
``{{ $MT5SYNC_PROJECT_DIR }}`` template, because ``prefect deploy`` resolves ``{{ $VAR }}``
from the *deploying* machine's environment whenever that variable is set there, baking one
machine's path into a deployment that runs on several hosts. This step decides on the worker
host, at run time.

It lives in the installed package (``mt5_sync.deployments.steps``) because the worker imports
a pull step by its dotted name before it has changed into any folder: the project's top-level
``deployments/`` folder is not on the flow-run process's ``sys.path`` and is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import mt5_sync

ENTRYPOINT_FILE = Path("flows") / "sync_account.py"


def project_directory(directory: str | None = None) -> Path:
    """Where this host's copy of the project is.

    ``directory`` if the step was given one, else ``MT5SYNC_PROJECT_DIR`` from the worker's
    environment, else the folder holding the ``mt5_sync`` package: the checkout for
    ``pip install -e .`` (the runbook's install). A plain ``pip install .`` puts only
    ``mt5_sync`` into site-packages, without the entrypoint files under ``flows/``: such a
    worker needs ``MT5SYNC_PROJECT_DIR`` pointing at a checkout.
    """
    if directory:
        return Path(directory)
    if os.environ.get("MT5SYNC_PROJECT_DIR"):
        return Path(os.environ["MT5SYNC_PROJECT_DIR"])
    return Path(next(iter(mt5_sync.__path__))).resolve().parent


def set_project_working_directory(directory: str | None = None) -> dict[str, str]:
    """Change into the project folder so entrypoints like ``flows/sync_account.py`` resolve."""
    target = project_directory(directory)
    if not (target / ENTRYPOINT_FILE).is_file():
        raise FileNotFoundError(
            f"{target / ENTRYPOINT_FILE} not found: set MT5SYNC_PROJECT_DIR in the worker's "
            "environment to the mt5-sync checkout, or `pip install -e .` it in the worker's venv"
        )
    os.chdir(target)
    return {"directory": str(target)}
