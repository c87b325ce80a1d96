"""A stand-in MetaTrader5 module whose terminal is logged in to someone else.

Loaded through the adapter's one import seam (MT5SYNC_MT5_MODULE) to prove the login/server
check: everything is the simulator except account_info(), which reports another login.
"""

from __future__ import annotations

from typing import Any

from mt5_sync.mt5sim import *  # noqa: F403 - the full MetaTrader5 surface
from mt5_sync.mt5sim import account_info as _account_info


def account_info() -> Any:
    info = _account_info()
    if info is None:
        return None
    return info._replace(login=info.login + 1)
