"""A stand-in MetaTrader5 module that records who drives which terminal install, and when.

Every API call appends ``{"pid", "path", "call", "login", "t0", "t1"}`` to the JSON-lines file
named by ``MT5SIM_CALL_LOG``; ``path`` is the terminal the process initialised. Tests use it to
prove that two processes never drive the same install at the same time.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import mt5_sync.mt5sim as _sim
from mt5_sync.mt5sim import *  # noqa: F403 - the full MetaTrader5 surface

_path: str | None = None


def _record(name: str, fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``fn`` (default: the simulator's function ``name``), recording each call."""
    fn = fn or getattr(_sim, name)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _path
        if name == "initialize":
            _path = kwargs.get("path") or (args[0] if args else None)
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            t1 = time.time()
            log = os.environ.get("MT5SIM_CALL_LOG")
            if log:
                line = json.dumps(
                    {
                        "pid": os.getpid(),
                        "path": _path,
                        "call": name,
                        "login": args[0] if name == "login" and args else None,
                        "t0": t0,
                        "t1": t1,
                    }
                )
                with open(log, "a", encoding="utf-8") as f:
                    f.write(line + "\n")

    return wrapper


initialize = _record("initialize")
login = _record("login")
account_info = _record("account_info")
positions_get = _record("positions_get")
history_deals_get = _record("history_deals_get")
shutdown = _record("shutdown")
