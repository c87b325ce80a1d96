"""Account-health tasks around the store: which accounts are due, and the after-cycle review
(server pauses, freshness, the outbox of account events). See mt5_sync/sync/health.py."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from mt5_sync.tasks import runtime
from mt5_sync.tasks.database import db_task

log = logging.getLogger(__name__)


@db_task("load-account-schedule")
async def load_account_schedule(account_ids: list[str], now: datetime) -> list[dict[str, Any]]:
    """``mt5_account_schedule_at(now)`` rows of these accounts (due or not, why, until when)."""
    return await runtime.in_db_thread(runtime.store().account_schedule, account_ids, now)


@db_task("review-cycle-health")
async def review_cycle_health(
    execution_id: str, now: datetime, pause_servers: bool
) -> dict[str, Any]:
    """One task run after the cycle (a task run costs the server 30-45 ms of CPU):

    * ``paused``: servers newly paused because most of their accounts failed the same
      transient way in this cycle (``pause_servers`` and a ``server_pause_s`` > 0);
    * ``freshness``: ``mt5_account_freshness_at(now, slo)`` rows of every account;
    * ``events``: the account health events taken from the outbox (each taken once).
    """
    settings = runtime.settings()
    store = runtime.store()
    paused: list[dict[str, Any]] = []
    if pause_servers and settings.server_pause_s > 0:
        paused = await runtime.in_db_thread(store.pause_failing_servers, {
            "execution_id": execution_id,
            "now": now.isoformat(),
            "min_accounts": settings.server_pause_min_accounts,
            "ratio": settings.server_pause_ratio,
            "pause_s": settings.server_pause_s,
        })
    freshness = await runtime.in_db_thread(
        store.account_freshness, now, settings.freshness_slo_s
    )
    events = await runtime.in_db_thread(store.take_health_events, 500)
    return {"paused": paused, "freshness": freshness, "events": events}


def emit(events: list[dict[str, Any]], related: list[dict[str, str]] | None = None) -> int:
    """Send ``emit_event`` argument sets to Prefect; returns how many were accepted.

    An event that cannot be sent is logged, never raised: alerts must not fail a sync cycle.
    """
    from prefect.events import emit_event

    sent = 0
    for spec in events:
        try:
            if emit_event(**spec, related=related) is not None:
                sent += 1
        except Exception as exc:  # pragma: no cover - depends on the events client
            log.warning("could not emit %s: %s", spec.get("event"), exc)
    return sent
