"""The flows' one door to Prefect's own API: which hosts are live, run a shard on each, and
whether a lease holder's flow run is still alive.

Hosts are work queues. Every Windows host runs ``prefect worker start --pool mt5-windows
--work-queue <host> --work-queue default`` (``mt5-sync worker`` does exactly that): its own
queue receives the cycle's shard for that host, ``default`` the cycle itself and manual syncs.
A host is *live* when its queue was polled within ``liveness_s`` (a worker polls every
``PREFECT_WORKER_QUERY_SECONDS``, 10 s by default) and is not paused; adding or removing a host
is starting or stopping its worker, nothing in ``prefect.yaml`` changes (docs/windows-runbook.md).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import arun_deployment
from prefect.runtime import deployment, flow_run

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"
#: what the cycle passes to every shard run (the host-shard deployment's flow parameters)
SHARD_PARAMETERS = frozenset({
    "execution_id", "host", "trigger", "sync_type", "full_from", "max_concurrency", "budget_s",
    "deadline_utc"})


async def deployment_pool() -> str | None:
    """The work pool of the flow run we are in, if it came from a deployment (else None)."""
    run_id = flow_run.get_id()
    if not run_id or not deployment.id:
        return None
    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(str(run_id)))
    return run.work_pool_name


async def live_hosts(pool: str, liveness_s: float) -> list[str]:
    """Names of the pool's host queues (all but ``default``) polled within ``liveness_s``."""
    async with get_client() as client:
        queues = await client.read_work_queues(work_pool_name=pool)
    cutoff = datetime.now(UTC) - timedelta(seconds=liveness_s)
    return sorted(
        q.name for q in queues
        if q.name != DEFAULT_QUEUE and not q.is_paused
        and q.last_polled is not None and q.last_polled >= cutoff
    )


@dataclass
class ShardRun:
    host: str
    flow_run_id: str
    state: str  # Prefect state type: SCHEDULED, PENDING, RUNNING, COMPLETED, CRASHED, ...
    message: str | None = None

    @property
    def final(self) -> bool:
        return self.state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


async def start_shards(
    deployment: str, hosts: Sequence[str], parameters: dict[str, Any], execution_id: str
) -> list[ShardRun]:
    """One shard flow run per host, routed to the host's work queue; returns at once.

    The idempotency key (cycle + host) makes a retried parent find its shards, not double them.
    """
    unknown = set(parameters) - SHARD_PARAMETERS
    if unknown:
        raise ValueError(f"not parameters of the shard flow: {sorted(unknown)}")

    async def start(host: str) -> ShardRun:
        run = await arun_deployment(
            deployment,
            parameters={**parameters, "host": host},
            work_queue_name=host,
            timeout=0,
            idempotency_key=f"{execution_id}:{host}",
            flow_run_name=f"shard-{host}",
            as_subflow=True,
        )
        return ShardRun(host, str(run.id), run.state.type.value if run.state else "SCHEDULED")

    return list(await asyncio.gather(*(start(h) for h in hosts)))


async def refresh(runs: Sequence[ShardRun]) -> None:
    """Read the shard runs' current states (one call)."""
    by_id = {r.flow_run_id: r for r in runs}
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in by_id])))
    for fr in found:
        run = by_id.get(str(fr.id))
        if run is not None and fr.state is not None:
            run.state = fr.state.type.value
            run.message = fr.state.message


async def cancel_unstarted(runs: Sequence[ShardRun]) -> None:
    """Cancel shard runs no worker picked up (their host died after it was last seen live)."""
    from prefect.states import Cancelled

    async with get_client() as client:
        for run in runs:
            if run.state in ("SCHEDULED", "PENDING"):
                try:
                    await client.set_flow_run_state(
                        uuid.UUID(run.flow_run_id),
                        Cancelled(message="the cycle ended before this host picked its shard up"),
                        force=True,
                    )
                    run.state = "CANCELLED"
                except Exception as exc:  # best effort: it has nothing to claim any more
                    log.warning("could not cancel shard %s: %s", run.host, exc)


async def crash(runs: Sequence[ShardRun], why: str) -> None:
    """Mark shard runs Crashed (their host stopped answering) so they stop counting as Running."""
    from prefect.states import Crashed

    async with get_client() as client:
        for run in runs:
            try:
                await client.set_flow_run_state(
                    uuid.UUID(run.flow_run_id), Crashed(message=f"host {run.host}: {why}"),
                    force=True,
                )
                run.state = "CRASHED"
            except Exception as exc:  # best effort
                log.warning("could not mark shard %s crashed: %s", run.host, exc)


async def final_flow_runs(flow_run_ids: Sequence[str]) -> set[str]:
    """Of these flow runs, those Prefect reports final (crashed, cancelled, done)."""
    ids = [i for i in flow_run_ids if i]
    if not ids:
        return set()
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in ids])))
    return {str(fr.id) for fr in found if fr.state is not None and fr.state.is_final()}
