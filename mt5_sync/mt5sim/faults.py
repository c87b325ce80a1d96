"""Fault injection: which configured fault fires on a call, with counters shared across processes.

Every terminal runs in its own OS process and a retry may land in another one, so "fail the
first N calls" must be counted outside any one process: one small file per fault under the
world's state directory, read-modify-written under an exclusive ``fcntl`` lock.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from mt5_sync.mt5sim import constants as c
from mt5_sync.mt5sim.ledger import MALFORMED_TICKET_OFFSET, ticket_base
from mt5_sync.mt5sim.structures import TradeDeal
from mt5_sync.mt5sim.world import AccountSpec, Fault

LOGIN_KINDS = frozenset({"wrong_password", "otp_required", "init_failure"})
CALL_KINDS = frozenset({"ipc_timeout", "hang"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def consume(state_dir: Path, key: str, times: int | None) -> bool:
    """Count one matching call; True while the fault should still fire (``None`` = forever)."""
    if times is None:
        return True
    if times <= 0:
        return False
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{_UNSAFE.sub('_', key)}.count"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 64).strip()
        used = int(raw) if raw else 0
        if used >= times:
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(used + 1).encode())
        return True
    finally:
        os.close(fd)  # closing releases the lock


def reset_counters(state_dir: Path) -> None:
    """Forget every fault counter (tests call this between scenarios sharing a state dir)."""
    shutil.rmtree(state_dir, ignore_errors=True)


def matches(fault: Fault, calls: Collection[str]) -> bool:
    """Whether ``fault`` applies to an API invocation covering ``calls`` (e.g. {"login"})."""
    if fault.kind in LOGIN_KINDS:
        return "login" in calls and fault.call in ("*", "login")
    if fault.kind == "malformed_deals":
        return "history_deals_get" in calls and fault.call in ("*", "history_deals_get")
    return fault.call == "*" or fault.call in calls


def firing(
    spec: AccountSpec, state_dir: Path, calls: Collection[str], kinds: Collection[str]
) -> Fault | None:
    """The first of the account's faults of ``kinds`` that fires on this invocation.

    Each matching fault consumes at most one count per invocation, so ``call="*"`` with
    ``times=2`` fails exactly the next two API calls, whatever they are.
    """
    for index, fault in enumerate(spec.faults):
        if fault.kind not in kinds or not matches(fault, calls):
            continue
        key = f"{spec.server}-{spec.login}-{index}-{fault.kind}"
        if consume(state_dir, key, fault.times):
            return fault
    return None


def hang_forever() -> None:
    """A terminal that stopped answering: only killing the process ends this."""
    while True:
        time.sleep(3600)


def malformed_deals(spec: AccountSpec, server_now: int) -> list[TradeDeal]:
    """Records a broken terminal may return; none belongs to the true ledger (own tickets)."""
    base = ticket_base(spec.login) + MALFORMED_TICKET_OFFSET
    symbol = spec.symbols[0]
    when = server_now - 600

    def deal(k: int, **changes: Any) -> TradeDeal:
        good = TradeDeal(
            base + 2 * k + 1,
            base + 2 * k,
            when,
            when * 1000,
            c.DEAL_TYPE_BUY,
            c.DEAL_ENTRY_IN,
            0,
            base + 2 * k,
            c.DEAL_REASON_CLIENT,
            0.1,
            1.1,
            0.0,
            0.0,
            0.0,
            0.0,
            symbol,
            "",
            "",
        )
        return good._replace(**changes)

    return [
        deal(0, price=math.nan),
        deal(1, volume=-0.5, type=c.DEAL_TYPE_SELL),
        deal(2, symbol=""),
        deal(3, time=0, time_msc=0),
    ]
