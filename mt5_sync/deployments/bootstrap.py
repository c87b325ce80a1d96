"""Create the process work pool (and optional per-host work queues) the deployments use, and
the automation that marks a flow run Crashed when its heartbeats stop.

    python -m mt5_sync.deployments.bootstrap             # pool "mt5-windows", type process
    python -m mt5_sync.deployments.bootstrap --queue host-a --queue host-b

Why the automation: a SIGKILLed flow run (its host lost power, its worker killed) stays
Running in Prefect for good, and keeps its deployment's concurrency slot until the slot's lease
runs out -- measured 294 s for the scheduled cycle, during which every new cycle was cancelled
(DESIGN.md). The runs of this project's deployments send a heartbeat event every 30 s
(``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` in prefect.yaml's job variables); this automation marks
a run Crashed 65 s after its last heartbeat, which also releases its deployment slot at once (Prefect's
``ReleaseFlowConcurrencySlots`` rule). This is the recipe of Prefect's "Detect zombie flows"
guide, limited to runs tagged ``mt5``. Prefect Cloud's managed "Unresponsive run detection" does
the same.

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

POOL_NAME = "mt5-windows"
POOL_TYPE = "process"
ZOMBIE_AUTOMATION = "mt5-sync: crash runs whose heartbeats stopped"
HEARTBEAT_S = 30  # Prefect's minimum; prefect.yaml sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY to it
HEARTBEAT_GRACE_S = 65  # two heartbeats and a margin for a late one


@dataclass
class BootstrapReport:
    pool: str
    pool_created: bool
    queues_created: list[str] = field(default_factory=list)
    automations_created: list[str] = field(default_factory=list)


def zombie_run_automation() -> AutomationCore:
    """The automation (not yet saved): a run tagged mt5 with no heartbeat for 65 s is Crashed."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks an mt5-sync flow run Crashed when its heartbeats stop (its host or "
        "process died), which frees its deployment's concurrency slot. Created by "
        "python -m mt5_sync.deployments.bootstrap.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.mt5"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=HEARTBEAT_GRACE_S),
        ),
        actions=[ChangeFlowRunState(
            name="Crashed",
            state=StateType.CRASHED,
            force=False,  # an ordinary transition: Prefect's rules free the deployment slot
            message=f"no heartbeat for {HEARTBEAT_GRACE_S}s: its host or process died "
            f"(automation {ZOMBIE_AUTOMATION!r})",
        )],
    )


async def ensure_automations() -> list[str]:
    """Create the project's automations that are missing (by name); returns those created."""
    from prefect import get_client

    wanted = zombie_run_automation()
    async with get_client() as client:
        existing = await client.read_automations_by_name(ZOMBIE_AUTOMATION)
        if existing:
            return []
        await client.create_automation(wanted)
    return [ZOMBIE_AUTOMATION]


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
    report.automations_created = asyncio.run(ensure_automations())
    state = "created" if report.pool_created else "already there"
    print(f"work pool {report.pool!r} ({POOL_TYPE}): {state}")
    for queue in report.queues_created:
        print(f"work queue {queue!r}: created")
    print(f"automation {ZOMBIE_AUTOMATION!r}: "
          f"{'created' if report.automations_created else 'already there'}")
    print("next: prefect deploy --all   (from the repository root)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
