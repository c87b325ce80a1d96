"""``sync_trading_data``: the scheduled cycle over every active account.

Reads top to bottom: load accounts (least recently synced first), set aside the ones that
are backing off (a wrong password, a dead server: reported ``skipped`` with the reason and the
next attempt, see mt5_sync/sync/health.py) and, when the cycle has a budget, load the others'
recent sync durations; then a dispatcher keeps ``sync_account`` subflows in
flight as a sliding window (a slow account holds only its own place) and, before starting
each account, asks the deadline planner whether it can finish within the budget — the ones
that cannot are *deferred* (not started, reported and logged as ``deferred``, first in line
next cycle). After the cycle: servers that failed as a whole are paused, the freshness
figures join the summary and the health events are emitted. Finally the summary is published
as a table artifact and returned in the Edge Function's response shape.

Terminals and subflows are counted apart. At most ``max_concurrency`` accounts hold a
terminal at once (the terminal pool's cap, shared with manual syncs on the host through the
installs' locks), but the window holds more subflows than that (``MT5SYNC_QUEUED_ACCOUNTS``,
default as many again): the extra ones have done their Prefect and database bookkeeping and
wait in the pool's queue, so a terminal that frees up starts its next account at once, and
an account's commit and final states happen after its terminal is already someone else's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from mt5_sync.clock import utc_now
from mt5_sync.flows.sync_account import sync_account
from mt5_sync.settings import Settings
from mt5_sync.sync import health, timing
from mt5_sync.sync.deadline import DeadlinePlanner
from mt5_sync.sync.outcome import AccountOutcome, summarize_cycle, summary_table
from mt5_sync.sync.steps import describe_error
from mt5_sync.tasks import runtime
from mt5_sync.tasks.database import (
    load_active_accounts,
    load_duration_estimates,
    record_deferred_syncs,
)
from mt5_sync.tasks.health import emit as emit_health_events
from mt5_sync.tasks.health import load_account_schedule, review_cycle_health
from mt5_sync.tasks.terminal import warm_up_terminals


def _sync_id(execution_id: str, account_id: str) -> str:
    """Stable per (cycle, account): a retried cycle reuses its accounts' cached fetches."""
    return str(uuid.uuid5(uuid.UUID(execution_id), account_id))


@flow(name="sync-trading-data", log_prints=False)
async def sync_trading_data(
    max_concurrency: int | None = None,
    sync_type: str = "incremental",
    account_ids: list[str] | None = None,
    trigger: str = "scheduled",
    full_from: str | None = None,
    cycle_budget_s: float | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    settings = runtime.settings()
    started = utc_now()
    clock = time.monotonic()
    execution_id = flow_run.get_id() or str(uuid.uuid4())
    terminals = min(max_concurrency or settings.max_concurrency, settings.slot_count)
    limit = settings.in_flight_for(terminals)
    budget = settings.cycle_budget_s if cycle_budget_s is None else cycle_budget_s

    if trigger == "backfill" and not account_ids:
        # A backfill re-reads full history: never let an empty list mean "every account".
        raise ValueError("a backfill needs account_ids (and usually full_from)")
    listed = await load_active_accounts(account_ids or None)
    # Account health (issue 14): the scheduled cycle leaves backed-off accounts alone; they
    # are reported 'skipped' with the reason and the next attempt. Manual syncs and backfills
    # are never held back. (A claim query would apply the same predicate,
    # public.mt5_account_due(id, broker_server, now).)
    accounts: list[dict[str, Any]] = listed
    skipped: dict[str, AccountOutcome] = {}
    if trigger == "scheduled" and listed:
        schedule = await load_account_schedule([a["id"] for a in listed], started)
        accounts, skipped = health.split_due(listed, schedule, now=started, sync_type=sync_type)
        if skipped:
            logger.info("%d accounts backed off, not tried this cycle", len(skipped))
    history: dict[str, float] = {}
    if accounts:
        # All terminal workers start now, in parallel (not one by one in the first wave),
        # while the accounts' recent durations load.
        warm_up = asyncio.ensure_future(warm_up_terminals())
        try:
            if budget > 0:
                history = await load_duration_estimates(
                    [a["id"] for a in accounts], settings.estimate_history_syncs
                )
        finally:
            await warm_up
    planner = DeadlinePlanner(
        budget_s=budget, history_ms=history, default_s=settings.default_account_estimate_s
    )
    pool = runtime.terminals()
    pool.limit_in_use(terminals)
    pool.reset_usage()
    logger.info(
        "syncing %d active accounts on %d terminals, %d subflows in flight%s", len(accounts),
        terminals, limit, f", budget {budget:g}s" if budget > 0 else "",
    )

    async def run_one(account: dict[str, Any]) -> AccountOutcome:
        slot_started = time.perf_counter()
        sync_id = _sync_id(execution_id, account["id"])
        state = await sync_account(
            account_id=account["id"],
            trigger=trigger,
            sync_type=sync_type,
            sync_id=sync_id,
            execution_id=execution_id,
            account_label=account["label"],
            full_from=full_from,
            return_state=True,
        )
        slot_ms = (time.perf_counter() - slot_started) * 1000
        try:
            data = await state.aresult(raise_on_failure=False)
        except Exception as exc:  # the subflow crashed before reporting an outcome
            data = exc
        if isinstance(data, dict) and "account_id" in data:
            outcome = AccountOutcome(**data)
            outcome.login = outcome.login or account["login"]
            work = sum(outcome.timings.get(k, 0.0) for k in timing.WORK_STEPS)
            queued = outcome.timings.get("terminal_wait_ms", 0.0)
            outcome.timings["slot_ms"] = slot_ms
            outcome.timings["prefect_ms"] = max(0.0, slot_ms - work - queued)
            planner.observe(slot_ms / 1000, outcome.duration_ms / 1000)
            return outcome
        planner.observe(slot_ms / 1000, None)
        timing.pop(sync_id)  # the subflow died before collecting its step timings
        code, message = describe_error(data if isinstance(data, BaseException) else
                                       RuntimeError(str(state.message)))
        now = utc_now().isoformat()
        return AccountOutcome(
            account_id=account["id"], status="failed", started_at=now, completed_at=now,
            duration_ms=0, error_code=code, error_message=message, login=account["login"],
        )

    def defer(account: dict[str, Any], estimate_s: float, elapsed_s: float) -> AccountOutcome:
        now = utc_now().isoformat()
        return AccountOutcome(
            account_id=account["id"], status="deferred", started_at=now, completed_at=now,
            duration_ms=0, error_code="deadline", login=account["login"],
            error_message=planner.deferral_message(estimate_s, elapsed_s),
            sync_id=_sync_id(execution_id, account["id"]), sync_type=sync_type,
            extra={"estimate_ms": round(estimate_s * 1000)},
        )

    # The sliding window: start accounts while a slot is free, wait for any one to finish.
    outcomes: dict[str, AccountOutcome] = dict(skipped)
    queue = deque(accounts)
    running: dict[asyncio.Task[AccountOutcome], str] = {}
    peak = 0
    try:
        while queue or running:
            while queue and len(running) < limit:
                account = queue.popleft()
                elapsed = time.monotonic() - clock
                estimate = planner.admit(account["id"], elapsed)
                if estimate is not None:
                    outcomes[account["id"]] = defer(account, estimate, elapsed)
                    continue
                running[asyncio.ensure_future(run_one(account))] = account["id"]
                peak = max(peak, len(running))
            if running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    outcomes[running.pop(finished)] = finished.result()
    finally:
        pool.limit_in_use(pool.size)  # the pool outlives this cycle in a long-lived process

    deferred = [o for o in outcomes.values() if o.status == "deferred"]
    if deferred:
        await record_deferred_syncs({
            "execution_id": execution_id,
            "flow_run_id": flow_run.get_id(),
            "trigger": trigger,
            "sync_type": sync_type,
            "deferred_at": utc_now().isoformat(),
            "syncs": [
                {"sync_id": o.sync_id, "account_id": o.account_id,
                 "estimate_ms": o.extra.get("estimate_ms"), "message": o.error_message}
                for o in deferred
            ],
        })
        logger.warning(
            "%d of %d accounts deferred to the next cycle (budget %gs)",
            len(deferred), len(accounts), budget,
        )

    summary = summarize_cycle(
        [outcomes[a["id"]] for a in listed],
        execution_id=execution_id,
        started=started,
        finished=utc_now(),
        max_in_flight=peak,
        terminals=terminals,
        terminals_busy=pool.usage_snapshot() if accounts else None,
    )
    if budget > 0:
        summary["cycleBudgetS"] = budget
    await _review_health(summary, execution_id, trigger, settings)
    await acreate_table_artifact(
        table=summary_table(summary),
        key="sync-trading-data-summary",
        description=(
            f"{summary['totalAccounts']} accounts: {summary['successCount']} success, "
            f"{summary['partialCount']} partial, {summary['failureCount']} failed, "
            f"{summary['deferredCount']} deferred, {summary['skippedCount']} skipped in "
            f"{summary['duration_ms']} ms; {health.freshness_line(summary['freshness'])}"
        ),
    )
    logger.info(
        "cycle done: %d accounts, %d success, %d partial, %d failed, %d deferred, %d ms, "
        "peak in flight %d, terminals busy peak %s mean %s of %d",
        summary["totalAccounts"], summary["successCount"], summary["partialCount"],
        summary["failureCount"], summary["deferredCount"], summary["duration_ms"], peak,
        summary.get("terminalsBusyPeak"), summary.get("terminalsBusyMean"), terminals,
    )
    return summary


async def _review_health(
    summary: dict[str, Any], execution_id: str, trigger: str, settings: Settings
) -> None:
    """After the cycle: pause servers that failed as a whole (said once), add the freshness
    figures to the summary, emit the events a human must hear about."""
    logger = get_run_logger()
    now = utc_now()  # one instant: the summary's figures are the view's at this moment
    review = await review_cycle_health(execution_id, now, trigger == "scheduled")
    freshness = health.freshness_stats(
        review["freshness"], slo_s=settings.freshness_slo_s, at=now
    )
    summary["freshness"] = freshness
    related = [{"prefect.resource.id": f"prefect.flow-run.{execution_id}",
                "prefect.resource.role": "flow-run"}]
    events = [health.account_event(e) for e in review["events"]]
    for paused in review["paused"]:
        logger.warning(
            "server %s paused until %s: %d of %d accounts failed with %s this cycle",
            paused["broker_server"], paused["paused_until"].isoformat(),
            paused["accounts_failed"], paused["accounts_tried"], paused["error_code"],
        )
        events.append(health.server_paused_event(paused, execution_id))
    summary["pausedServers"] = [
        {**p, "paused_until": p["paused_until"].isoformat()} for p in review["paused"]
    ]
    reasons = health.degraded_reasons(
        summary, freshness, failure_rate=settings.degraded_failure_rate
    )
    summary["degraded"] = reasons
    if reasons:
        logger.warning("cycle degraded: %s", "; ".join(reasons))
        events.append(health.cycle_degraded_event(reasons, summary, freshness,
                                                  "sync-trading-data"))
    summary["eventsEmitted"] = emit_health_events(events, related)
    logger.info(health.freshness_line(freshness))
