"""Run only by tests/test_shutdown.py, in a child pytest that it then stops with SIGTERM.

Not collected on its own (no ``test_`` prefix in the file name). Holds the session's
PostgreSQL and Prefect server, says where they are, and waits to be stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest


def test_hold_the_session_servers(pg, prefect_server, stack_root: Path):
    target = os.environ.get("MT5SYNC_SIGNAL_TARGET_INFO")
    if not target:
        pytest.skip("run by tests/test_shutdown.py only")
    info = {"stack_root": str(stack_root), "pgdata": str(pg.pgdata),
            "prefect_port": urlsplit(prefect_server.api_url).port}
    Path(target + ".tmp").write_text(json.dumps(info))
    os.replace(target + ".tmp", target)  # whole, or not there
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
    pytest.fail("was not stopped")
