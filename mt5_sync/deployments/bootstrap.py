"""Create the process work pool (and optional per-host work queues) the deployments use, and
the automations: one that marks a flow run Crashed when its heartbeats stop, and the defaults
on mt5-sync's events.

    python -m mt5_sync.deployments.bootstrap             # pool "mt5-windows", type process
    python -m mt5_sync.deployments.bootstrap --queue host-a --queue host-b
    python -m mt5_sync.deployments.bootstrap --notify-block slack-webhook/ops   # alerts to Slack

Automations (one per event of issue 14; idempotent, matched by name): they fire on every
``mt5.account.needs-credentials``, ``mt5.account.recovered``, ``mt5.server.paused`` and
``mt5.cycle.degraded`` event, one firing per resource (account, server, cycle). Notification
blocks are the user's: without ``--notify-block`` the action is "do nothing" (the firing is
still visible under Automations and in the event feed); with it, a SendNotification through
that block (create one first, e.g. ``prefect block create slack-webhook``). An automation that
already exists is left as it is (edit it in the UI, or delete it and run bootstrap again).

Why the automation: a SIGKILLed flow run (its host lost power, its worker killed) stays
Running in Prefect for good, and keeps its deployment's concurrency slot until the slot's lease
runs out -- measured 294 s for the scheduled cycle, during which every new cycle was cancelled
(DESIGN.md). The runs of this project's deployments send a heartbeat event every 30 s
(``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` in prefect.yaml's job variables); this automation
marks a run Crashed 65 s after its last heartbeat, which also releases its deployment slot at
once (Prefect's ``ReleaseFlowConcurrencySlots`` rule). This is the recipe of Prefect's
"Detect zombie flows" guide, limited to runs tagged ``mt5``. Prefect Cloud's managed
"Unresponsive run detection" does the same.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

POOL_NAME = "mt5-windows"
POOL_TYPE = "process"
ZOMBIE_AUTOMATION = "mt5-sync: crash runs whose heartbeats stopped"
HEARTBEAT_S = 30  # Prefect's minimum; prefect.yaml sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY to it
HEARTBEAT_GRACE_S = 65  # two heartbeats and a margin for a late one


@dataclass(frozen=True)
class AutomationSpec:
    name: str
    event: str
    description: str
    subject: str


AUTOMATIONS = (
    AutomationSpec(
        "mt5: account needs credentials", "mt5.account.needs-credentials",
        "The broker rejected an account's login (wrong investor password, OTP required): the "
        "schedule leaves it alone until its password changes.",
        "MT5 account {{ event.resource.name }} needs new credentials",
    ),
    AutomationSpec(
        "mt5: account recovered", "mt5.account.recovered",
        "An account that needed credentials or was backing off synced again.",
        "MT5 account {{ event.resource.name }} syncs again",
    ),
    AutomationSpec(
        "mt5: broker server paused", "mt5.server.paused",
        "Most accounts of one broker server failed the same way in one cycle; the server's "
        "accounts are paused for a while.",
        "MT5 server {{ event.resource.name }} paused",
    ),
    AutomationSpec(
        "mt5: sync cycle degraded", "mt5.cycle.degraded",
        "A cycle's failure rate or the accounts' staleness is over its threshold.",
        "MT5 sync degraded",
    ),
)

NOTIFY_BODY = (
    "{{ event.event }} {{ event.resource.name }}: {{ event.payload.message or "
    "event.payload.reasons or event.payload.error_code }}"
)


async def ensure_automations(notify_block: str | None = None) -> dict[str, str]:
    """Create the default automations that are missing; returns name -> id of all of them.

    ``notify_block``: ``<block-type-slug>/<block-name>`` of a notification block the user
    created; its actions send notifications. Raises ``ValueError`` if that block is unknown.
    """
    from datetime import timedelta

    from prefect import get_client
    from prefect.automations import (
        AutomationCore,
        DoNothing,
        EventTrigger,
        Posture,
        SendNotification,
    )
    from prefect.exceptions import ObjectNotFound

    ids: dict[str, str] = {}
    async with get_client() as client:
        block_id = None
        if notify_block:
            slug, _, name = notify_block.partition("/")
            try:
                block = await client.read_block_document_by_name(name, slug)
            except ObjectNotFound:
                raise ValueError(f"no notification block {notify_block!r}") from None
            block_id = block.id
        for spec in AUTOMATIONS:
            existing = await client.read_automations_by_name(spec.name)
            if existing:
                ids[spec.name] = str(existing[0].id)
                continue
            actions: list[Any] = [
                SendNotification(block_document_id=block_id, subject=spec.subject,
                                 body=NOTIFY_BODY)
                if block_id is not None else DoNothing()
            ]
            automation = AutomationCore(
                name=spec.name,
                description=spec.description,
                trigger=EventTrigger(
                    expect={spec.event},
                    for_each={"prefect.resource.id"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=actions,
            )
            ids[spec.name] = str(await client.create_automation(automation))
    return ids


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


async def ensure_zombie_automation() -> list[str]:
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
    parser.add_argument(
        "--notify-block", default=None, metavar="TYPE/NAME",
        help="notification block the default automations send to, e.g. slack-webhook/ops "
        "(default: the automations do nothing but record that they fired)",
    )
    parser.add_argument("--no-automations", action="store_true",
                        help="create only the work pool and queues")
    args = parser.parse_args(argv)
    report = asyncio.run(
        ensure_work_pool(args.pool, queues=args.queue, concurrency_limit=args.concurrency_limit)
    )
    state = "created" if report.pool_created else "already there"
    print(f"work pool {report.pool!r} ({POOL_TYPE}): {state}")
    for queue in report.queues_created:
        print(f"work queue {queue!r}: created")
    if not args.no_automations:
        report.automations_created = asyncio.run(ensure_zombie_automation())
        print(f"automation {ZOMBIE_AUTOMATION!r}: "
              f"{'created' if report.automations_created else 'already there'}")
        for name, automation_id in asyncio.run(ensure_automations(args.notify_block)).items():
            print(f"automation {name!r}: {automation_id}")
    print("next: prefect deploy --all   (from the repository root)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
