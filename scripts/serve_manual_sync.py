"""Serve the ``sync-account/manual-sync`` deployment with a Prefect Runner (no work pool).

For local use, the e2e tests and ``scripts/manual_sync_local.py``; production deploys the
same entry of ``prefect.yaml`` to a process worker (docs/manual-sync.md). The deployment's
default parameters and its ``mt5.sync.requested`` trigger are read from ``prefect.yaml``
itself, so what the tests exercise is what gets deployed. Run from the repository root with
the sync's environment (DATABASE_URL, MT5SYNC_CREDENTIALS_KEY, terminal settings) and
PREFECT_API_URL; it polls the server and runs each flow run in a child process.

    python scripts/serve_manual_sync.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEPLOYMENT = "manual-sync"


def manual_sync_entry(path: Path = ROOT / "prefect.yaml") -> dict[str, Any]:
    """The ``manual-sync`` deployment of prefect.yaml (anchors resolved)."""
    for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["deployments"]:
        if entry.get("name") == DEPLOYMENT:
            return dict(entry)
    raise LookupError(f"no deployment {DEPLOYMENT!r} in {path}")


def main() -> None:
    from prefect.events import DeploymentEventTrigger

    from mt5_sync.flows.sync_account import sync_account

    entry = manual_sync_entry()
    triggers = [DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"})
                for t in entry.get("triggers", []) if t.get("type", "event") == "event"]
    sync_account.serve(name=DEPLOYMENT, triggers=triggers,  # type: ignore[arg-type]
                       parameters=entry.get("parameters") or {}, tags=entry.get("tags"))


if __name__ == "__main__":
    main()
