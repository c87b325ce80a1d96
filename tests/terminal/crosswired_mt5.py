"""A stand-in MetaTrader5 module whose terminal is logged in to someone else.

Loaded through the adapter's one import seam (MT5SYNC_MT5_MODULE) to prove the login/server
check: everything is the simulator except account_info(), which reports another login —
for every account, or only for the logins listed in ``MT5SIM_CROSSWIRED_LOGINS``
(comma-separated), so one world can hold healthy and cross-wired accounts.
"""

from __future__ import annotations

import os
from typing import Any

from mt5_sync.mt5sim import *  # noqa: F403 - the full MetaTrader5 surface
from mt5_sync.mt5sim import account_info as _account_info

CROSSWIRED_ENV = "MT5SIM_CROSSWIRED_LOGINS"


def _crosswired(login: int) -> bool:
    listed = os.environ.get(CROSSWIRED_ENV, "").strip()
    if not listed:
        return True
    return str(login) in {part.strip() for part in listed.split(",")}


def account_info() -> Any:
    info = _account_info()
    if info is None or not _crosswired(info.login):
        return info
    return info._replace(login=info.login + 1)
