"""``sync_cycle_shard``: one host's part of a cycle -- claim accounts, sync them, report.

Reads top to bottom: warm the host's terminals; then a sliding window keeps ``sync_account``
subflows in flight, and whenever it has room it CLAIMS the next accounts of the cycle from the
queue in Postgres (least recently synced first, ``FOR UPDATE SKIP LOCKED``): a fast host takes
more, a host that joins late takes what is left, and nobody holds a fixed list. Before starting
an account the deadline planner may give it back (deferred). An account whose lease a live
holder has (a manual sync) comes back *skipped*: logged, never waited for. The shard's report
goes to the database (``sync_cycle_shards``), where the parent merges every host's.

Terminals and subflows are counted apart. At most ``max_concurrency`` accounts hold one of this
host's terminals at once (its terminal pool's cap, shared with manual syncs on the host through
the installs' locks), but the window holds more subflows than that (``MT5SYNC_QUEUED_ACCOUNTS``,
default as many again): the extra ones have done their Prefect and database bookkeeping and
wait in the pool's queue, so a terminal that frees up starts its next account at once.

The parent runs this on every live host's work queue (a deployment, ``prefect.yaml``), or, when
it was not started from a deployment (the CLI, the demo, tests), calls :func:`run_shard` in its
own process: the claim path is the same either way.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from mt5_sync.clock import utc_now
from mt5_sync.flows.sync_account import sync_account
from mt5_sync.store.factory import Store
from mt5_sync.sync import timing
from mt5_sync.sync.deadline import DeadlinePlanner
from mt5_sync.sync.outcome import AccountOutcome
from mt5_sync.sync.steps import describe_error
from mt5_sync.tasks import runtime
from mt5_sync.tasks.database import record_deferred_syncs
from mt5_sync.tasks.orchestration import final_flow_runs
from mt5_sync.tasks.terminal import warm_up_terminals
from mt5_sync.terminal.check import describe, misconfigured_installs

#: an account's failure that says the host, not the account, is broken: stop claiming
HOST_ERROR_CODES = frozenset({"terminal_misconfigured"})


def cycle_sync_id(execution_id: str, account_id: str) -> str:
    """Stable per (cycle, account): a retried cycle reuses its accounts' cached fetches."""
    return str(uuid.uuid5(uuid.UUID(execution_id), account_id))


async def run_shard(
    *,
    execution_id: str,
    host: str,
    trigger: str,
    sync_type: str,
    full_from: str | None,
    max_concurrency: int | None,
    budget_s: float,
) -> dict[str, Any]:
    """Claim and sync accounts of cycle ``execution_id`` on this host until none are left.

    Returns (and records in ``sync_cycle_shards``) ``{"host", "outcomes": [AccountOutcome
    dicts], "terminals", "max_in_flight", "terminals_busy": {"peak", "mean"} | None,
    "claims", "taken_over", "flow_run_id", "error"}``. ``budget_s`` <= 0: no deadline.
    A host whose terminal paths are wrong claims nothing and says so in ``error``.
    """
    logger = get_run_logger()
    settings = runtime.settings()
    store = runtime.store()
    keeper = runtime.lease_keeper()
    shard_run_id = flow_run.get_id()
    clock = time.monotonic()
    terminals = min(max_concurrency or settings.max_concurrency, settings.slot_count)
    limit = settings.in_flight_for(terminals)
    await runtime.in_db_thread(store.record_cycle_shard, execution_id, host, shard_run_id, None)
    problems = misconfigured_installs(settings.terminal_paths)
    if problems:
        return await _report_host_error(
            store, execution_id, host, shard_run_id, terminals, describe(problems), logger)

    warm_up = asyncio.ensure_future(warm_up_terminals())
    history: dict[str, float] = {}
    planner = DeadlinePlanner(
        budget_s=budget_s, history_ms=history, default_s=settings.default_account_estimate_s
    )
    pool = runtime.terminals()
    pool.limit_in_use(terminals)
    logger.info(
        "host %s: claiming accounts for %d terminals, %d subflows in flight%s", host, terminals,
        limit, f", budget {budget_s:g}s" if budget_s > 0 else "",
    )

    async def run_one(account: dict[str, Any]) -> AccountOutcome:
        slot_started = time.perf_counter()
        sync_id = cycle_sync_id(execution_id, account["account_id"])
        state = await sync_account(
            account_id=account["account_id"],
            trigger=trigger,
            sync_type=sync_type,
            sync_id=sync_id,
            execution_id=execution_id,
            account_label=account["label"],
            full_from=full_from,
            lease_holder=account["lease_holder"],
            return_state=True,
        )
        slot_ms = (time.perf_counter() - slot_started) * 1000
        try:
            data = await state.aresult(raise_on_failure=False)
        except Exception as exc:  # the subflow crashed before reporting an outcome
            data = exc
        if isinstance(data, dict) and "account_id" in data:
            outcome = AccountOutcome(**data)
            outcome.login = outcome.login or account["login_number"]
            work = sum(outcome.timings.get(k, 0.0) for k in timing.WORK_STEPS)
            queued = outcome.timings.get("terminal_wait_ms", 0.0)
            outcome.timings["slot_ms"] = slot_ms
            outcome.timings["prefect_ms"] = max(0.0, slot_ms - work - queued)
            planner.observe(slot_ms / 1000, outcome.duration_ms / 1000)
        else:
            planner.observe(slot_ms / 1000, None)
            timing.pop(sync_id)  # the subflow died before collecting its step timings
            keeper.drop(account["lease_holder"])
            code, message = describe_error(data if isinstance(data, BaseException) else
                                           RuntimeError(str(state.message)))
            now = utc_now().isoformat()
            outcome = AccountOutcome(
                account_id=account["account_id"], status="failed", started_at=now,
                completed_at=now, duration_ms=0, error_code=code, error_message=message,
                login=account["login_number"],
            )
        outcome.host = host
        return outcome

    def skipped(account: dict[str, Any]) -> AccountOutcome:
        now = utc_now().isoformat()
        return AccountOutcome(
            account_id=account["account_id"], status="skipped", started_at=now,
            completed_at=now, duration_ms=0, error_code="sync_in_progress",
            error_message="another sync of this account is running (its lease is live); "
            "skipped this cycle, first in line next cycle",
            login=account["login_number"], sync_type=sync_type, host=host,
        )

    async def defer(accounts: list[tuple[dict[str, Any], float, float]]) -> None:
        ids = [a["account_id"] for a, _, _ in accounts]
        for a, _, _ in accounts:
            keeper.drop(a["lease_holder"])
        await runtime.in_db_thread(store.unclaim_cycle_accounts, execution_id, ids, "deferred")
        await record_deferred_syncs({
            "execution_id": execution_id, "flow_run_id": shard_run_id, "trigger": trigger,
            "sync_type": sync_type, "deferred_at": utc_now().isoformat(),
            "syncs": [
                {"sync_id": cycle_sync_id(execution_id, a["account_id"]),
                 "account_id": a["account_id"], "estimate_ms": round(est * 1000),
                 "message": planner.deferral_message(est, elapsed)}
                for a, est, elapsed in accounts
            ],
        })
        for a, est, elapsed in accounts:
            now = utc_now().isoformat()
            outcomes[a["account_id"]] = AccountOutcome(
                account_id=a["account_id"], status="deferred", started_at=now,
                completed_at=now, duration_ms=0, error_code="deadline",
                login=a["login_number"], error_message=planner.deferral_message(est, elapsed),
                sync_id=cycle_sync_id(execution_id, a["account_id"]), sync_type=sync_type,
                extra={"estimate_ms": round(est * 1000)}, host=host,
            )

    async def claim(n: int) -> list[dict[str, Any]]:
        rows = await runtime.in_db_thread(
            store.claim_cycle_accounts, execution_id, host, n, settings.lease_ttl_s,
            shard_run_id, settings.estimate_history_syncs if planner.enabled else 0,
        )
        for row in rows:
            row["label"] = f"{row['login_number']}@{row['broker_server']}"
            if row["outcome"] == "claimed":
                keeper.hold(row["lease_holder"])
        # A skipped account's holder may be a run Prefect already reports over (crashed,
        # cancelled) whose lease has not lapsed yet: break it, so the next claim (the next
        # cycle, a manual sync) need not wait for the lapse.
        held = {r["detail"]: r for r in rows if r["outcome"] == "skipped" and r.get("detail")}
        for run_id in await final_flow_runs(list(held)) if held else ():
            row = held[run_id]
            await runtime.in_db_thread(
                store.break_sync_lease, row["account_id"], row["lease_holder"])
            logger.info("broke the lease of %s: its holder's flow run %s is over",
                        row["label"], run_id)
        history.update({r["account_id"]: float(r["median_ms"]) for r in rows
                        if r["outcome"] == "claimed" and r.get("median_ms") is not None})
        return rows

    outcomes: dict[str, AccountOutcome] = {}
    running: dict[asyncio.Task[AccountOutcome], str] = {}
    peak = claims = taken_over = 0
    exhausted = False
    host_error: str | None = None
    await warm_up
    pool.reset_usage()  # terminals busy: measured from the first claim, as before shards
    try:
        while True:
            while not exhausted and len(running) < limit:
                rows = await claim(limit - len(running))
                if not rows:
                    exhausted = True
                    break
                late: list[tuple[dict[str, Any], float, float]] = []
                for row in rows:
                    if row["outcome"] == "skipped":
                        outcomes[row["account_id"]] = skipped(row)
                        continue
                    claims += 1
                    taken_over += int(row["claims"] > 1)
                    elapsed = time.monotonic() - clock
                    estimate = planner.admit(row["account_id"], elapsed)
                    if estimate is not None:
                        late.append((row, estimate, elapsed))
                        continue
                    task = asyncio.ensure_future(run_one(row))
                    running[task] = row["account_id"]
                    peak = max(peak, len(running))
                if late:
                    await defer(late)
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                outcome = finished.result()
                outcomes[running.pop(finished)] = outcome
                if outcome.error_code in HOST_ERROR_CODES and host_error is None:
                    host_error = outcome.error_message
                    exhausted = True  # the host is broken: leave the rest to the other hosts
                    logger.error("host %s stops claiming: %s", host, host_error)
    finally:
        pool.limit_in_use(pool.size)  # the pool outlives this cycle in a long-lived process

    report: dict[str, Any] = {
        "host": host,
        "flow_run_id": shard_run_id,
        "outcomes": [o.to_dict() for o in outcomes.values()],
        "terminals": terminals,
        "max_in_flight": peak,
        "terminals_busy": pool.usage_snapshot() if outcomes else None,
        "claims": claims,
        "taken_over": taken_over,
        "duration_s": round(time.monotonic() - clock, 3),
        "error": host_error,
    }
    await runtime.in_db_thread(store.record_cycle_shard, execution_id, host, shard_run_id, report)
    logger.info(
        "host %s: %d accounts (%d claimed, %d taken over), peak in flight %d", host,
        len(outcomes), claims, taken_over, peak,
    )
    return report


async def _report_host_error(
    store: Store, execution_id: str, host: str, shard_run_id: str | None, terminals: int,
    error: str, logger: Any,
) -> dict[str, Any]:
    logger.error("host %s: %s", host, error)
    report: dict[str, Any] = {
        "host": host, "flow_run_id": shard_run_id, "outcomes": [], "terminals": 0,
        "max_in_flight": 0, "terminals_busy": None, "claims": 0, "taken_over": 0,
        "duration_s": 0.0, "error": error, "configured_terminals": terminals,
    }
    await runtime.in_db_thread(store.record_cycle_shard, execution_id, host, shard_run_id, report)
    return report


@flow(name="sync-cycle-shard", flow_run_name="shard-{host}", log_prints=False,
      persist_result=False)
async def sync_cycle_shard(
    execution_id: str,
    host: str,
    trigger: str = "scheduled",
    sync_type: str = "incremental",
    full_from: str | None = None,
    max_concurrency: int | None = None,
    budget_s: float = 0.0,
    deadline_utc: str | None = None,
) -> dict[str, Any]:
    """This host's part of cycle ``execution_id`` (started by the cycle on the host's queue).

    ``deadline_utc`` (ISO 8601): the cycle's deadline; the shard's budget is what is left of it
    when the shard starts (a few seconds after the cycle dispatched it). Past it, the shard
    starts at most one account (the planner always admits the first).
    """
    if budget_s > 0 and deadline_utc:
        left = (datetime.fromisoformat(deadline_utc) - utc_now()).total_seconds()
        budget_s = min(budget_s, max(left, 0.001))
    report = await run_shard(
        execution_id=execution_id, host=host, trigger=trigger, sync_type=sync_type,
        full_from=full_from, max_concurrency=max_concurrency, budget_s=budget_s,
    )
    # The parent reads the report from the database; the return value is for the UI.
    return {k: v for k, v in report.items() if k != "outcomes"} | {
        "accounts": len(report["outcomes"])}
