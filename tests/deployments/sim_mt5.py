"""The MetaTrader5 stand-in the deployment test's terminal workers import (MT5SYNC_MT5_MODULE).

The simulator, with every call recorded (``tests.terminal.recording_mt5``: which process drove
which terminal install, when) and the logins listed in ``MT5SIM_CROSSWIRED_LOGINS`` answering
``account_info()`` with another login (``tests.terminal.crosswired_mt5``).

With ``MT5SIM_COVERAGE_RC`` set, importing it starts coverage in the terminal worker process,
so the test measures the adapter exactly where it runs, without tracing the Prefect worker
and flow-run processes too (``COVERAGE_PROCESS_START`` would, at several times the cost).
Coverage starts after ``session.py`` was imported: its ``def`` lines count as not run here,
its function bodies are measured.
"""

from __future__ import annotations

import atexit
import os

from tests.terminal import crosswired_mt5
from tests.terminal.recording_mt5 import *  # noqa: F403 - the full MetaTrader5 surface, recorded
from tests.terminal.recording_mt5 import _record

account_info = _record("account_info", crosswired_mt5.account_info)


def _start_coverage(rcfile: str) -> None:
    import coverage

    cov = coverage.Coverage(config_file=rcfile, data_suffix=True)
    cov.start()

    def save() -> None:
        cov.stop()
        cov.save()

    atexit.register(save)


if os.environ.get("MT5SIM_COVERAGE_RC"):
    _start_coverage(os.environ["MT5SIM_COVERAGE_RC"])
