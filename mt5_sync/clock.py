"""The product's one clock: everything that asks "what time is it" asks :func:`utc_now`.

Fetch windows, the history cursor (the moment a snapshot was planned), ``sync_logs``
timestamps, deferral and failure records and the manual-sync API's event times all come from
here, in the process that plans and records the sync. The terminal worker processes never read
a clock of their own for data: the planning process hands them the snapshot moment in the
:class:`~mt5_sync.contracts.FetchRequest`.

Why a seam: the broker's "now" and ours must agree. In production both are the real clock. In
tests and benchmarks the simulated broker's clock is pinned in its world file; the harness
drives this seam with a :class:`RunningClock` started at the same instant, so the product and
the broker agree on any calendar date (the suite runs its end-to-end scenarios at several
dates, DST weeks included).

Two things deliberately do not use this clock:

- *durations* (deadline budget, terminal timeouts, step timings) use ``time.monotonic``: they
  measure elapsed time, never a date, and must not jump when a test moves the clock;
- *account leases* and the manual-sync rate limit are the database's ``now()``: several hosts
  share one lease, and the database is the only clock they all read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    """The machine's clock (production)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class RunningClock:
    """Starts at ``start`` and runs at the rate of ``time.monotonic`` from there.

    :meth:`set` jumps to another instant (a test advancing the simulated world by 30 h moves
    this clock with it); time keeps running from the new instant, so durations derived from two
    readings stay real.
    """

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._base = _aware(start)
        self._anchor = time.monotonic()

    def now(self) -> datetime:
        with self._lock:
            return self._base + timedelta(seconds=time.monotonic() - self._anchor)

    def set(self, at: datetime) -> None:
        with self._lock:
            self._base = _aware(at)
            self._anchor = time.monotonic()


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"a clock needs a timezone-aware instant, got naive {moment!r}")
    return moment.astimezone(UTC)


_clock: Clock = SystemClock()


def utc_now() -> datetime:
    """Now, as the product sees it (timezone-aware UTC)."""
    return _clock.now()


def current() -> Clock:
    """The clock :func:`utc_now` reads."""
    return _clock


@contextmanager
def driven_by(clock: Clock) -> Iterator[Clock]:
    """Make ``clock`` the product's clock (process-wide, every thread) for the block."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = previous
