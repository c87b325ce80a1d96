"""Retry policy shared by every task: transient faults only, backoff with jitter."""

from __future__ import annotations

from typing import Any

from mt5_sync.errors import is_transient


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what can heal (IPC faults, timeouts, dropped connections).

    Authentication failures, invalid parameters and bugs fail at once: retrying a wrong
    password only gets the investor account locked by the broker.
    """
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    return exc is not None and is_transient(exc)
