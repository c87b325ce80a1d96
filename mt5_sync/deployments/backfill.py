"""Start a backfill run: full history of the chosen accounts from a start date.

    python -m mt5_sync.deployments.backfill --from 2024-01-01 ACCOUNT_ID [ACCOUNT_ID ...]

Runs the ``sync-trading-data/backfill`` deployment with ``account_ids`` and ``full_from``.
Unlike a bare ``prefect deployment run``, it refuses to start without accounts (an empty
``account_ids`` would backfill every active account) and checks the date first.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from mt5_sync.clock import utc_now

DEPLOYMENT = "sync-trading-data/backfill"


def backfill_parameters(account_ids: list[str], full_from: str) -> dict[str, Any]:
    """The run's parameters, validated: real UUIDs, an ISO date in the past (UTC if naive)."""
    if not account_ids:
        raise ValueError("name at least one account id (an empty list means every account)")
    ids = [str(uuid.UUID(a)) for a in account_ids]
    start = datetime.fromisoformat(full_from)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if start >= utc_now():
        raise ValueError(f"--from {full_from} is not in the past")
    return {"account_ids": ids, "full_from": start.isoformat(), "sync_type": "full",
            "trigger": "backfill"}


async def start_backfill(
    account_ids: list[str], full_from: str, deployment: str = DEPLOYMENT
) -> str:
    from prefect import get_client

    parameters = backfill_parameters(account_ids, full_from)
    async with get_client() as client:
        target = await client.read_deployment_by_name(deployment)
        run = await client.create_flow_run_from_deployment(target.id, parameters=parameters)
    return str(run.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--from", dest="full_from", required=True,
                        help="start date, ISO 8601 (UTC if no offset)")
    parser.add_argument("--deployment", default=DEPLOYMENT)
    parser.add_argument("account_ids", nargs="+", help="trading_accounts ids")
    args = parser.parse_args(argv)
    try:
        run_id = asyncio.run(start_backfill(args.account_ids, args.full_from, args.deployment))
    except ValueError as exc:
        parser.error(str(exc))
    print(f"backfill flow run {run_id} created")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
