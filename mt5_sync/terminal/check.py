"""Is this host's terminal configuration usable? Checked once, at worker start and when a shard
starts, so a wrong ``MT5SYNC_TERMINAL_PATHS`` entry is one configuration error of the host, not
a failed login per account.

A wrong path is what makes MetaTrader5's ``initialize(path=...)`` fail with -10003 "IPC
initialize failed, Process create failed" (DESIGN.md, real terminals' failure modes): not a
transient fault, retrying never helps. Only paths this machine can resolve are checked (a
Windows path seen from Linux, as in the simulated setups, cannot be).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def misconfigured_installs(paths: Sequence[str]) -> list[str]:
    """One message per entry that names no terminal executable on this host (empty: all good)."""
    problems = []
    for path in paths:
        if not os.path.isabs(path):
            continue
        if os.path.isdir(path):
            problems.append(f"{path} is a folder: name its terminal64.exe")
        elif not os.path.isfile(path):
            problems.append(f"{path} does not exist")
    return problems


def describe(problems: Sequence[str]) -> str:
    return (
        f"terminal configuration error: {'; '.join(problems)} (MT5SYNC_TERMINAL_PATHS: each "
        "entry must be an installed terminal64.exe; initialize() would fail with -10003 "
        "'Process create failed'). This host claims no accounts until it is fixed."
    )
