"""A cycle that knows its deadline: which accounts to start, which to defer to the next cycle.

The scheduled cycle runs every 5 minutes and has a budget (default 270 s, leaving 30 s for the
accounts still in flight to finish). Before starting an account the parent asks
:meth:`DeadlinePlanner.admit`: if the account's expected duration, added to the time already
spent, would end after the budget, it is *deferred*: not started, reported ``deferred`` (not
failed) and written to ``sync_logs`` as such, without touching the account's ``last_sync_at`` —
so the least-recently-synced-first order of the next cycle puts it at the head of the queue.

Expected duration of one account, in order of preference:

1. its own history: the median ``duration_ms`` of its last few finished syncs (read once per
   cycle), plus this cycle's observed orchestration overhead per account (time its subflow ran
   minus the logged duration: commit, Prefect, queueing for a database thread). Both include
   the time queued for a terminal, which at a steady state is part of what an account costs;
2. otherwise the running mean of the slot times of the accounts finished in this cycle;
3. before any account has finished: ``default_s``.

A deferred account does not stop the dispatch: a later account with a shorter estimate may
still fit. Once the budget is spent, every remaining account is deferred at once. The first
account of a cycle is always started, whatever its estimate: every cycle makes progress, and an
account whose estimate alone exceeds the budget (a long backfill) is not deferred forever --
deferred, it is first in line next cycle, and there it starts.

Plain Python (no Prefect): unit-tested in ``tests/flows/test_deadline.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: orchestration overhead assumed per account before one has been observed (seconds)
DEFAULT_OVERHEAD_S = 0.5


@dataclass
class DeadlinePlanner:
    budget_s: float  # <= 0: no deadline, every account is admitted
    history_ms: Mapping[str, float] = field(default_factory=dict)
    default_s: float = 10.0
    _slot_total_s: float = 0.0
    _slots: int = 0
    _overhead_total_s: float = 0.0
    _overheads: int = 0
    _admitted: int = 0

    @property
    def enabled(self) -> bool:
        return self.budget_s > 0

    def overhead_s(self) -> float:
        if self._overheads:
            return self._overhead_total_s / self._overheads
        return DEFAULT_OVERHEAD_S

    def estimate_s(self, account_id: str) -> float:
        """Expected seconds this account's subflow will run (its wait for a terminal included)."""
        history = self.history_ms.get(account_id)
        if history is not None:
            return history / 1000 + self.overhead_s()
        if self._slots:
            return self._slot_total_s / self._slots
        return self.default_s

    def admit(self, account_id: str, elapsed_s: float) -> float | None:
        """None to start the account now; else its estimate (seconds): defer it."""
        estimate = self.estimate_s(account_id) if self.enabled else 0.0
        if self.enabled and self._admitted and elapsed_s + estimate > self.budget_s:
            return estimate
        self._admitted += 1
        return None

    def observe(self, slot_s: float, logged_duration_s: float | None) -> None:
        """Learn from a finished account: its slot time, and the part its log row missed."""
        if slot_s <= 0:
            return
        self._slot_total_s += slot_s
        self._slots += 1
        if logged_duration_s is not None and logged_duration_s >= 0:
            self._overhead_total_s += max(0.0, slot_s - logged_duration_s)
            self._overheads += 1

    def deferral_message(self, estimate_s: float, elapsed_s: float) -> str:
        return (
            f"deferred to the next cycle: expected ~{estimate_s:.1f}s would end after the "
            f"{self.budget_s:g}s cycle budget ({elapsed_s:.1f}s elapsed)"
        )
