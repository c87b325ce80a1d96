"""``sync_trading_data``: the scheduled cycle over every active account.

Reads top to bottom: load accounts (least recently synced first), run one ``sync_account``
subflow per account with at most ``max_concurrency`` in flight as a sliding window (a slow
account holds only its own slot), then publish the summary as a table artifact and return it
in the Edge Function's response shape.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from flows.sync_account import sync_account
from mt5_sync.sync.outcome import AccountOutcome, summarize_cycle, summary_table
from mt5_sync.sync.steps import describe_error
from tasks import runtime
from tasks.database import load_active_accounts


class InFlightGauge:
    """Counts subflows running right now; the maximum is reported with the summary."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def __enter__(self) -> InFlightGauge:
        self.current += 1
        self.peak = max(self.peak, self.current)
        return self

    def __exit__(self, *exc: object) -> None:
        self.current -= 1


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
) -> dict[str, Any]:
    logger = get_run_logger()
    settings = runtime.settings()
    started = datetime.now(UTC)
    execution_id = flow_run.get_id() or str(uuid.uuid4())
    limit = min(max_concurrency or settings.max_concurrency, settings.slot_count)

    accounts = await load_active_accounts(account_ids or None)
    logger.info("syncing %d active accounts, %d at a time", len(accounts), limit)

    window = asyncio.Semaphore(limit)
    gauge = InFlightGauge()

    async def run_one(account: dict[str, Any]) -> AccountOutcome:
        async with window:
            with gauge:
                state = await sync_account(
                    account_id=account["id"],
                    trigger=trigger,
                    sync_type=sync_type,
                    sync_id=_sync_id(execution_id, account["id"]),
                    execution_id=execution_id,
                    account_label=account["label"],
                    full_from=full_from,
                    return_state=True,
                )
        try:
            data = await state.aresult(raise_on_failure=False)
        except Exception as exc:  # the subflow crashed before reporting an outcome
            data = exc
        if isinstance(data, dict) and "account_id" in data:
            outcome = AccountOutcome(**data)
            outcome.login = outcome.login or account["login"]
            return outcome
        code, message = describe_error(data if isinstance(data, BaseException) else
                                       RuntimeError(str(state.message)))
        now = datetime.now(UTC).isoformat()
        return AccountOutcome(
            account_id=account["id"], status="failed", started_at=now, completed_at=now,
            duration_ms=0, error_code=code, error_message=message, login=account["login"],
        )

    outcomes = list(await asyncio.gather(*(run_one(a) for a in accounts)))

    summary = summarize_cycle(
        outcomes,
        execution_id=execution_id,
        started=started,
        finished=datetime.now(UTC),
        max_in_flight=gauge.peak,
    )
    await acreate_table_artifact(
        table=summary_table(summary),
        key="sync-trading-data-summary",
        description=(
            f"{summary['totalAccounts']} accounts: {summary['successCount']} success, "
            f"{summary['partialCount']} partial, {summary['failureCount']} failed "
            f"in {summary['duration_ms']} ms"
        ),
    )
    logger.info(
        "cycle done: %d accounts, %d success, %d partial, %d failed, %d ms, peak in flight %d",
        summary["totalAccounts"], summary["successCount"], summary["partialCount"],
        summary["failureCount"], summary["duration_ms"], gauge.peak,
    )
    return summary
