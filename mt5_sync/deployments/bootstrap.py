"""Create the process work pool (and optional per-host work queues) the deployments use.

    python -m mt5_sync.deployments.bootstrap             # pool "mt5-windows", type process
    python -m mt5_sync.deployments.bootstrap --queue host-a --queue host-b

Idempotent: an existing pool of type ``process`` is left as it is (queues are added); a pool
of that name with another type is an error. The plain-CLI equivalent is
``prefect work-pool create mt5-windows --type process`` (+ ``prefect work-queue create
host-a --pool mt5-windows``). Then ``prefect deploy --all`` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field

POOL_NAME = "mt5-windows"
POOL_TYPE = "process"


@dataclass
class BootstrapReport:
    pool: str
    pool_created: bool
    queues_created: list[str] = field(default_factory=list)


async def ensure_work_pool(
    name: str = POOL_NAME,
    *,
    queues: list[str] | None = None,
    concurrency_limit: int | None = None,
) -> BootstrapReport:
    """Make sure the process pool (and queues) exist on the Prefect API in the environment."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.client.schemas.filters import WorkQueueFilter
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    report = BootstrapReport(pool=name, pool_created=False)
    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            pool = None
        if pool is None:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type=POOL_TYPE,
                        description="MetaTrader 5 sync: process workers on the Windows hosts "
                        "that have the MT5 terminals (see docs/windows-runbook.md)",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                        concurrency_limit=concurrency_limit,
                    )
                )
                report.pool_created = True
            except ObjectAlreadyExists:  # created concurrently: fine
                pass
        elif pool.type != POOL_TYPE:
            raise SystemExit(
                f"work pool {name!r} exists with type {pool.type!r}; the MT5 deployments need "
                f"a {POOL_TYPE!r} pool (terminals must run on the worker's own desktop session)"
            )
        elif concurrency_limit is not None and pool.concurrency_limit != concurrency_limit:
            await client.update_work_pool(
                name, WorkPoolUpdate(concurrency_limit=concurrency_limit)
            )
        if not queues:
            return report
        existing = {
            q.name
            for q in await client.read_work_queues(
                work_pool_name=name, work_queue_filter=WorkQueueFilter(), limit=200, offset=0
            )
        }
        for queue in queues:
            if queue not in existing:
                await client.create_work_queue(name=queue, work_pool_name=name)
                report.queues_created.append(queue)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pool", default=POOL_NAME, help=f"work pool name ({POOL_NAME})")
    parser.add_argument(
        "--queue", action="append", default=[], help="extra work queue (one per host), repeatable"
    )
    parser.add_argument(
        "--concurrency-limit", type=int, default=None,
        help="max flow runs at once across the pool (default: unlimited)",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(
        ensure_work_pool(args.pool, queues=args.queue, concurrency_limit=args.concurrency_limit)
    )
    state = "created" if report.pool_created else "already there"
    print(f"work pool {report.pool!r} ({POOL_TYPE}): {state}")
    for queue in report.queues_created:
        print(f"work queue {queue!r}: created")
    print("next: prefect deploy --all   (from the repository root)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
