"""Keep this process's account leases alive: renew them all, every third of their TTL.

Why short renewed leases rather than one long TTL: a lease is how two syncs of one account
stay apart across hosts, and it is also what a dead host leaves behind. With a fixed 900 s TTL
a SIGKILLed cycle blocked its accounts for 15 minutes (measured 2026-11-30, DESIGN.md). Renewed
every ``ttl/3`` by a live holder, a lease outlives its holder by at most one TTL.

One daemon thread per process renews every held lease in ONE statement (``renew`` is the
store's ``renew_sync_leases``), so the cost does not grow with the accounts in flight. It is a
thread, not an asyncio task, so a busy event loop cannot starve it. A renewal that fails (the
database is unreachable) is retried at the next tick; the lease may then lapse, and the
account may be taken over: the commit is idempotent, so a late commit of the old holder only
repeats what it read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Renew = Callable[[Sequence[str], int], set[str]]


class LeaseKeeper:
    """Renews the leases of the holders registered with :meth:`hold` until :meth:`drop`.

    ``renew(holders, ttl_s) -> holders that still hold a lease``; ``ttl_s`` in seconds.
    """

    def __init__(self, renew: Renew, ttl_s: int, interval_s: float | None = None) -> None:
        self._renew = renew
        self.ttl_s = int(ttl_s)
        self.interval_s = interval_s if interval_s is not None else max(1.0, ttl_s / 3)
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, holder: str) -> None:
        """Renew ``holder``'s lease from now on (it was just acquired)."""
        with self._lock:
            self._held.add(holder)
            self._lost.discard(holder)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="lease-keeper", daemon=True
                )
                self._thread.start()

    def drop(self, holder: str) -> None:
        """Stop renewing (the lease was released, or the sync ended)."""
        with self._lock:
            self._held.discard(holder)
            self._lost.discard(holder)

    def lost(self, holder: str) -> bool:
        """True when a renewal found ``holder`` no longer holds its lease."""
        with self._lock:
            return holder in self._lost

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def renew_now(self) -> None:
        """One renewal round now (the thread does this every ``interval_s``)."""
        holders = self.held()
        if not holders:
            return
        try:
            still = self._renew(sorted(holders), self.ttl_s)
        except Exception as exc:  # the database is down: try again next tick
            log.warning("could not renew %d sync leases: %s", len(holders), exc)
            return
        gone = holders - still
        if gone:
            with self._lock:
                self._held -= gone
                self._lost |= gone
            log.warning("%d sync leases were lost (lapsed and taken over)", len(gone))

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.renew_now()
