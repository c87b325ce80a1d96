"""``sync_trading_data``: the scheduled cycle over every active account, on every live host.

Reads top to bottom: list the active accounts (for the report) and open the cycle's claim
queue in Postgres; then find the live hosts -- the work queues of this run's pool that a worker
polled recently -- and start one ``sync-cycle-shard`` run on each host's queue. Each shard
claims accounts from the shared queue as its own terminals free up, so a fast host takes
more and a host that joins later takes what is left (mt5_sync/flows/sync_cycle_shard.py). The
parent waits for the shards, merges their reports (and, for a host that died, what reached the
database) into the Edge Function's response, publishes the table artifact, and returns it.

The scheduled cycle leaves backed-off accounts alone (a wrong password, a dead server: see
mt5_sync/sync/health.py); they are reported ``skipped`` with the reason and the next attempt,
and excluded from the cycle's claim queue. After the cycle: servers that failed as a whole are
paused, the freshness figures join the summary and the health events are emitted.

Not started from a deployment (``mt5-sync sync``, the demo, tests), or with no host queue
live, the parent runs the one shard itself, in its own process, through the same claim queue.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from mt5_sync.clock import utc_now
from mt5_sync.flows.sync_cycle_shard import cycle_sync_id, run_shard
from mt5_sync.settings import Settings
from mt5_sync.sync import health
from mt5_sync.sync.outcome import AccountOutcome, summarize_cycle, summary_table
from mt5_sync.sync.shards import merge_cycle
from mt5_sync.tasks import orchestration, runtime
from mt5_sync.tasks.database import load_active_accounts, record_deferred_syncs
from mt5_sync.tasks.health import emit as emit_health_events
from mt5_sync.tasks.health import load_account_schedule, review_cycle_health


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
    execution_id = flow_run.get_id() or str(uuid.uuid4())
    budget = settings.cycle_budget_s if cycle_budget_s is None else cycle_budget_s

    if trigger == "backfill" and not account_ids:
        # A backfill re-reads full history: never let an empty list mean "every account".
        raise ValueError("a backfill needs account_ids (and usually full_from)")
    listed = await load_active_accounts(account_ids or None)
    # Account health: the scheduled cycle leaves backed-off accounts alone; they are reported
    # 'skipped' with the reason and the next attempt, and no shard may claim them. Manual syncs
    # and backfills are never held back.
    accounts: list[dict[str, Any]] = listed
    skipped: dict[str, AccountOutcome] = {}
    if trigger == "scheduled" and listed:
        schedule = await load_account_schedule([a["id"] for a in listed], started)
        accounts, skipped = health.split_due(listed, schedule, now=started, sync_type=sync_type)
        if skipped:
            logger.info("%d accounts backed off, not tried this cycle", len(skipped))
    store = runtime.store()
    await runtime.in_db_thread(
        store.open_sync_cycle, execution_id, trigger, sync_type, account_ids or None,
        sorted(skipped),
    )
    shard_args: dict[str, Any] = {
        "execution_id": execution_id, "trigger": trigger, "sync_type": sync_type,
        "full_from": full_from, "max_concurrency": max_concurrency,
    }

    pool_name = await orchestration.deployment_pool()
    hosts = await orchestration.live_hosts(pool_name, settings.host_liveness_s) if pool_name else []
    if hosts:
        logger.info("%d active accounts, claimed by %d live hosts: %s", len(accounts),
                    len(hosts), ", ".join(hosts))
        shards = await orchestration.start_shards(
            settings.shard_deployment, hosts,
            # the cycle's deadline as an instant: a shard that starts late (its worker's poll,
            # its process start) gets only what is left of the budget
            {**shard_args, "budget_s": budget,
             "deadline_utc": (started + timedelta(seconds=budget)).isoformat()
             if budget > 0 else None},
            execution_id,
        )
        give_up_after = (budget + 2 * settings.lease_ttl_s + 60) if budget > 0 else None
        await _wait_for_shards(shards, logger, give_up_after)
        reports = None
    else:
        if pool_name:
            logger.warning("no host queue of pool %s was polled in the last %gs: this run "
                           "syncs on its own host (%s)", pool_name, settings.host_liveness_s,
                           settings.host_name)
        reports = [await run_shard(host=settings.host_name, budget_s=budget, **shard_args)]

    cycle = await runtime.in_db_thread(store.cycle_report, execution_id)
    merged = merge_cycle(
        accounts,
        reports if reports is not None else
        [s["summary"] for s in cycle.get("shards", []) if s.get("summary")],
        cycle.get("claims", []), cycle.get("logs", []),
        now_iso=utc_now().isoformat(), sync_type=sync_type,
    )
    if merged.unclaimed:
        await record_deferred_syncs({
            "execution_id": execution_id, "flow_run_id": flow_run.get_id(), "trigger": trigger,
            "sync_type": sync_type, "deferred_at": utc_now().isoformat(),
            "syncs": [{"sync_id": cycle_sync_id(execution_id, o.account_id),
                       "account_id": o.account_id, "message": o.error_message}
                      for o in merged.unclaimed],
        })
    deferred = [o for o in merged.outcomes if o.status == "deferred"]
    if deferred:
        logger.warning(
            "%d of %d accounts deferred to the next cycle (budget %gs)",
            len(deferred), len(merged.outcomes), budget,
        )

    merged_by_id = {o.account_id: o for o in merged.outcomes}
    outcomes = [skipped[a["id"]] if a["id"] in skipped else merged_by_id.pop(a["id"])
                for a in listed] + list(merged_by_id.values())
    summary = summarize_cycle(
        outcomes,
        execution_id=execution_id,
        started=started,
        finished=utc_now(),
        max_in_flight=merged.max_in_flight,
        terminals=merged.terminals,
        terminals_busy=merged.terminals_busy,
    )
    summary["hosts"] = merged.hosts
    if merged.host_errors:
        summary["hostErrors"] = merged.host_errors
        for error in merged.host_errors:
            logger.error("host configuration error: %s", error)
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
        summary["failureCount"], summary["deferredCount"], summary["duration_ms"],
        merged.max_in_flight, summary.get("terminalsBusyPeak"), summary.get("terminalsBusyMean"),
        merged.terminals,
    )
    return summary


async def _wait_for_shards(
    shards: list[orchestration.ShardRun], logger: Any, give_up_after_s: float | None
) -> None:
    """Until every shard run is final. A shard whose host died is marked Crashed by the
    heartbeat automation (``deployments.bootstrap``), so this never waits on a dead host for
    long; a shard no worker picked up once the others are done is cancelled. Without the
    automation, a cycle with a budget stops waiting ``give_up_after_s`` after it started (its
    accounts' leases have lapsed by then) and marks what is left Crashed itself."""
    waited_from = time.monotonic()
    while True:
        await orchestration.refresh(shards)
        pending = [s for s in shards if not s.final]
        if not pending:
            break
        if all(s.state in ("SCHEDULED", "PENDING") for s in pending) and len(pending) < len(
                shards):
            # the other hosts finished: nothing is left to claim for one that never started
            await orchestration.cancel_unstarted(pending)
            break
        if give_up_after_s is not None and time.monotonic() - waited_from > give_up_after_s:
            await orchestration.crash(pending, f"no end after {give_up_after_s:g}s")
            break
        await asyncio.sleep(1.0)
    for s in shards:
        if s.state != "COMPLETED":
            logger.warning("shard on host %s ended %s: %s", s.host, s.state, s.message or "")


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
