"""Per-sync step timings: tasks record how long their plain work took, the flow reads them.

Process-local and keyed by ``sync_id``, so nothing changes in what tasks return (and in what
Prefect caches). The parent flow subtracts these, and the time the account queued for a
terminal (``terminal_wait_ms``), from the time its subflow ran: the rest is orchestration
overhead (Prefect), reported per account by the cycle and the benchmark.
Entries are popped when the account's subflow finishes, so the table never grows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_steps: dict[str, dict[str, float]] = {}


def record(sync_id: str, step: str, ms: float) -> None:
    with _lock:
        steps = _steps.setdefault(sync_id, {})
        steps[step] = steps.get(step, 0.0) + ms


@contextmanager
def timed(sync_id: str, step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        record(sync_id, step, (time.perf_counter() - started) * 1000)


def pop(sync_id: str) -> dict[str, float]:
    with _lock:
        return _steps.pop(sync_id, {})


#: steps that are the account's own work (terminal, database, transform), not orchestration
WORK_STEPS = ("db_ms", "fetch_ms", "transform_ms", "commit_ms")
