"""Which positions need their whole deal set read again (pure Python, no pandas).

Lives apart from ``transform`` because the terminal worker process uses it and must start
fast; ``transform.trades`` re-exports it and applies the same rules when building trades.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEAL_TYPE_BUY = 0
TRADE_DEAL_TYPES = (0, 1)
DEAL_ENTRY_IN = 0
DEAL_ENTRY_INOUT = 2
VOLUME_TOLERANCE = 1e-9


def positions_needing_history(deals: Iterable[Mapping[str, Any]]) -> list[int]:
    """Position ids whose deal set is not self-consistent and has an exit: fetch them whole.

    Pure Python on raw deal dicts (for the terminal side, before any validation), applying
    the same rules as :func:`closed_trades`: the first deal must be ``IN``, an exit may not
    exceed the open volume or run in the open direction, an ``IN`` may not oppose it. This
    catches what "an exit without an IN" misses: a netting position whose first ``IN`` lies
    before the window while a later ``IN`` (an add) lies inside it.
    """
    by_position: dict[int, list[tuple[int, int, int, int, float]]] = {}
    has_exit: set[int] = set()
    for d in deals:
        try:
            pid, type_, entry = int(d["position_id"]), int(d["type"]), int(d["entry"])
            key = (int(d["time_msc"]), int(d["ticket"]))
            volume = float(d["volume"])
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if pid <= 0 or type_ not in TRADE_DEAL_TYPES:
            continue
        by_position.setdefault(pid, []).append((*key, type_, entry, volume))
        if entry != DEAL_ENTRY_IN:
            has_exit.add(pid)
    needing: list[int] = []
    for pid in sorted(has_exit):
        running = 0.0
        consistent = True
        for index, (_, _, type_, entry, volume) in enumerate(sorted(by_position[pid])):
            signed = volume if type_ == DEAL_TYPE_BUY else -volume
            flat = abs(running) <= VOLUME_TOLERANCE
            against = not flat and signed * running < 0
            if index == 0 and entry != DEAL_ENTRY_IN:
                consistent = False
            elif entry == DEAL_ENTRY_IN:
                consistent = not against
            elif entry == DEAL_ENTRY_INOUT:
                consistent = against and volume >= abs(running) - VOLUME_TOLERANCE
            else:
                consistent = against and volume <= abs(running) + VOLUME_TOLERANCE
            if not consistent:
                break
            running += signed
        if not consistent:
            needing.append(pid)
    return needing
