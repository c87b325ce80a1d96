"""One cycle across several hosts, any of which may die: the proof on this machine.

Three simulated Windows hosts, each a ``mt5-sync worker --host <name>`` (a Prefect process
worker polling its own work queue and ``default``) with its own terminal installs (3, 3 and 4)
and its own lock directory; one Prefect server and one Postgres; the deployments from
``prefect.yaml`` with the real CLI; the zombie-run automation from ``deployments.bootstrap``.
The cycle (``scheduled-sync``) starts one ``host-shard`` run per live host, and the shards claim
the accounts from the cycle's queue in Postgres.

The tests share the stack (module fixture) and run in file order; each checks its own cycles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mt5_sync.credentials import encrypt_password, generate_key
from mt5_sync.deployments.bootstrap import ZOMBIE_AUTOMATION
from mt5_sync.localstack import EmbeddedPostgres, PrefectServer, prefect_client_env
from mt5_sync.mt5sim.world import FixedLatency, World, build_world
from mt5_sync.store.postgres import PostgresStore
from mt5_sync.verify import compare_with_broker
from tests.deployments.test_deploy_and_run import FINAL, Api, prefect_bin, run_cli
from tests.terminal.test_slotlock import interleavings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
USER_ID = "00000000-0000-4000-8000-00000000a3b7"
POOL = "mt5-windows"
ACCOUNTS = 60
SLOTS = {"host-a": 3, "host-b": 3, "host-c": 4}
CYCLE_TIMEOUT_S = 420


@dataclass
class Hosts:
    """The stack: database, world, the deployed project, and the hosts' workers."""

    tmp: Path
    env: dict[str, str]
    store: PostgresStore
    world: World
    ids: list[str]
    installs: dict[str, list[str]] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    calls_log: Path = Path()
    api_url: str = ""

    def start_worker(self, host: str, slots: int) -> None:
        installs = []
        for i in range(slots):
            exe = self.tmp / host / f"MT5-{i}" / "terminal64.exe"
            exe.parent.mkdir(parents=True)
            exe.write_text("portable install stand-in")
            installs.append(str(exe))
        self.installs[host] = installs
        locks = self.tmp / host / "locks"
        locks.mkdir()
        env = dict(self.env, MT5SYNC_TERMINAL_PATHS=";".join(installs),
                   MT5SYNC_TERMINAL_LOCK_DIR=str(locks))
        with (self.tmp / f"worker-{host}.log").open("wb") as log:
            self.workers[host] = subprocess.Popen(
                [sys.executable, "-m", "mt5_sync.cli", "worker", "--host", host],
                env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of the host: its worker, flow runs and terminal workers."""
        import psutil

        killed = []
        world = self.env["MT5SIM_WORLD"]  # this stack's processes only (another run may share
        for proc in psutil.process_iter():  # the host names on this machine)
            with contextlib.suppress(psutil.Error):
                environ = proc.environ()
                if (environ.get("MT5SYNC_HOST") == host and environ.get("MT5SIM_WORLD") == world
                        and proc.pid != os.getpid()):
                    proc.kill()
                    killed.append(proc.pid)
        self.workers.pop(host, None)
        return killed

    def host_of_flow_run(self, flow_run_id: str) -> str | None:
        import psutil

        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                environ = proc.environ()
                if environ.get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                    return environ.get("MT5SYNC_HOST")
        return None

    def worker_log(self, host: str) -> str:
        return (self.tmp / f"worker-{host}.log").read_text(errors="replace")

    def logs_of(self, execution_id: str) -> list[dict[str, Any]]:
        return self.store.fetch_all(
            "select l.account_id::text, l.status, l.error_code, l.error_message"
            " from sync_logs l where l.execution_id = %s::uuid", (execution_id,))


@pytest.fixture(scope="module")
def hosts(prefect_server: PrefectServer, pg: EmbeddedPostgres,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    from mt5_sync.store.migrations import apply_migrations

    tmp = tmp_path_factory.mktemp("hosts")
    db_url = pg.create_database("multihost", drop=True)
    apply_migrations(db_url)
    started = datetime.now(UTC)
    world = build_world(
        # the workers' flow runs read the machine's clock: pin the broker's at the same instant
        ACCOUNTS, seed=71, now_utc=started, timeline_start_utc=started - timedelta(days=6),
        latency=FixedLatency(seconds=0.02), state_dir=str(tmp / "sim-state"),
        trades_per_day=(0.5, 1.5),
    )
    world_path = world.save(tmp / "world.json")
    key = generate_key()
    store = PostgresStore(db_url)
    store.ensure_user(USER_ID, "hosts@example.com")
    ids = [
        store.register_account(
            user_id=USER_ID, login_number=a.login, broker_server=a.server,
            broker_name=a.company, investor_password_encrypted=encrypt_password(a.password, key),
            server_time_rule=a.time_rule,
        )
        for a in world.accounts
    ]
    env = prefect_client_env(tmp / "home")
    env.update({
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
        "MT5SYNC_PROJECT_DIR": str(REPO_ROOT),
        "DATABASE_URL": db_url,
        "MT5SYNC_CREDENTIALS_KEY": key,
        "MT5SYNC_TERMINAL_BACKEND": "simulated",
        "MT5SYNC_TERMINAL_TIMEOUT_S": "30",
        "MT5SYNC_FETCH_RETRIES": "1",
        "MT5SYNC_RETRY_BACKOFF_S": "0.1",
        "MT5SYNC_MT5_MODULE": "tests.terminal.recording_mt5",
        "MT5SIM_WORLD": str(world_path),
        "MT5SIM_CALL_LOG": str(tmp / "terminal-calls.jsonl"),
    })
    for name in ("MT5SYNC_SIM_WORLD", "MT5SYNC_SIMULATED_SLOTS", "MT5SYNC_CREDENTIALS_KEY_BLOCK",
                 "MT5SYNC_HOST", "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
        env.pop(name, None)
    stack = Hosts(tmp=tmp, env=env, store=store, world=world, ids=ids,
                  calls_log=tmp / "terminal-calls.jsonl", api_url=prefect_server.api_url)

    out = run_cli([sys.executable, "-m", "mt5_sync.deployments.bootstrap"], env)
    assert ZOMBIE_AUTOMATION in out
    out = run_cli([prefect_bin(), "--no-prompt", "deploy", "--all"], env, timeout=240)
    assert "host-shard" in out, out

    async def pause() -> None:
        async with Api(prefect_server.api_url) as api:
            scheduled = await api.client.read_deployment_by_name(
                "sync-trading-data/scheduled-sync")
            await api.pause_schedules_and_drop_scheduled_runs(scheduled)

    asyncio.run(pause())
    for host, slots in SLOTS.items():
        stack.start_worker(host, slots)
    try:
        asyncio.run(_wait_live(prefect_server.api_url, set(SLOTS)))
        yield stack
    finally:
        for host in list(stack.workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stack.workers[host].pid, signal.SIGTERM)
        for worker in stack.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=30)
        for host in SLOTS:  # whatever a SIGTERM left behind (flow runs in their own sessions)
            stack.kill_host(host)
        stack.kill_host("host-d")
        store.close() if hasattr(store, "close") else None


async def _wait_live(api_url: str, wanted: set[str], timeout: float = 120) -> None:
    """Until every host's queue has been polled (its worker is up)."""
    deadline = time.monotonic() + timeout
    async with Api(api_url) as api:
        while True:
            queues = await api.client.read_work_queues(work_pool_name=POOL)
            polled = {q.name for q in queues if q.last_polled is not None}
            if wanted <= polled:
                return
            assert time.monotonic() < deadline, f"hosts never polled: {wanted - polled}"
            await asyncio.sleep(0.5)


async def _start_cycle(api: Api) -> Any:
    scheduled = await api.client.read_deployment_by_name("sync-trading-data/scheduled-sync")
    return await api.client.create_flow_run_from_deployment(scheduled.id)


def _shards(hosts: Hosts, execution_id: str) -> dict[str, dict[str, Any]]:
    rows = hosts.store.fetch_all(
        "select host, summary from sync_cycle_shards where execution_id = %s::uuid",
        (execution_id,))
    return {r["host"]: r["summary"] for r in rows}


def _diagnostics(hosts: Hosts) -> str:
    return "\n".join(f"--- {h}\n{hosts.worker_log(h)[-3000:]}" for h in SLOTS)


async def _final_states(flow_run_ids: list[str], api_url: str) -> dict[str, str]:
    async with Api(api_url) as api:
        return {i: (await api.wait_final(i, 300)).state_type.value for i in flow_run_ids}


# ---------------------------------------------------------------- 1. capacity from every host


def test_one_cycle_claims_every_account_once_across_three_hosts(hosts: Hosts) -> None:
    async def go() -> Any:
        async with Api(hosts.api_url) as api:
            cycle = await _start_cycle(api)
            return await api.wait_final(cycle.id, CYCLE_TIMEOUT_S)

    run = asyncio.run(go())
    assert run.state_type.value == "COMPLETED", _diagnostics(hosts)
    execution_id = str(run.id)

    logs = hosts.logs_of(execution_id)
    per_account = Counter(r["account_id"] for r in logs)
    assert set(per_account) == set(hosts.ids)
    assert set(per_account.values()) == {1}, "an account was synced twice in one cycle"
    assert {r["status"] for r in logs} == {"success"}, [r for r in logs if r["status"] != "success"]
    assert compare_with_broker(hosts.store, hosts.world).problems == []

    claims = hosts.store.fetch_all(
        "select host, count(*) as n from sync_cycle_claims where execution_id = %s::uuid"
        " group by host", (execution_id,))
    by_host = {r["host"]: r["n"] for r in claims}
    assert set(by_host) == set(SLOTS), by_host  # all three hosts took work
    assert sum(by_host.values()) == ACCOUNTS

    shards = _shards(hosts, execution_id)
    assert set(shards) == set(SLOTS)
    for host, report in shards.items():
        assert report["terminals"] == SLOTS[host]
        assert report["terminals_busy"]["peak"] <= SLOTS[host]  # never over its slots
        assert report["error"] is None
        assert len(report["outcomes"]) == by_host[host]

    # Every terminal call of a host went to that host's own installs, and no install ever saw
    # two processes at once.
    calls = [json.loads(line) for line in hosts.calls_log.read_text().splitlines()]
    host_of_install = {p: h for h, paths in hosts.installs.items() for p in paths}
    used = {host_of_install[c["path"]] for c in calls}
    assert used == set(SLOTS)
    assert interleavings(hosts.calls_log) == []


# ---------------------------------------------------------------- 2. a host joins mid-cycle


def test_a_fourth_host_started_mid_cycle_takes_work_in_the_next_cycle(hosts: Hosts) -> None:
    async def go() -> tuple[Any, Any]:
        async with Api(hosts.api_url) as api:
            first = await _start_cycle(api)
            await api.wait_state(first.id, ("RUNNING", *FINAL), CYCLE_TIMEOUT_S)
            hosts.start_worker("host-d", 2)  # no redeploy, nothing in prefect.yaml changes
            first = await api.wait_final(first.id, CYCLE_TIMEOUT_S)
            await _wait_live(hosts.api_url, {"host-d"})
            second = await api.wait_final((await _start_cycle(api)).id, CYCLE_TIMEOUT_S)
            return first, second

    first, second = asyncio.run(go())
    assert first.state_type.value == second.state_type.value == "COMPLETED", _diagnostics(hosts)
    shards = _shards(hosts, str(second.id))
    assert "host-d" in shards, sorted(shards)
    assert shards["host-d"]["claims"] > 0
    logs = hosts.logs_of(str(second.id))
    assert Counter(r["account_id"] for r in logs) == Counter(hosts.ids)
    assert {r["status"] for r in logs} == {"success"}


# ---------------------------------------------------------------- 3. a host dies mid-cycle


def test_a_host_killed_mid_cycle_costs_seconds_not_cycles(hosts: Hosts) -> None:
    async def go() -> dict[str, Any]:
        async with Api(hosts.api_url) as api:
            cycle = await _start_cycle(api)
            await api.wait_state(cycle.id, ("RUNNING",), CYCLE_TIMEOUT_S)
            execution_id = str(cycle.id)
            victim = None  # the host running the cycle itself
            deadline = time.monotonic() + CYCLE_TIMEOUT_S
            while victim is None:
                assert time.monotonic() < deadline
                victim = hosts.host_of_flow_run(execution_id)
                await asyncio.sleep(0.2)
            # mid-cycle: some accounts done, and syncs of the victim's own shard in flight
            while True:
                assert time.monotonic() < deadline, "the victim's shard never got going"
                logs = hosts.logs_of(execution_id)
                mine = {r["account_id"] for r in hosts.store.fetch_all(
                    "select account_id::text from sync_cycle_claims where execution_id ="
                    " %s::uuid and host = %s", (execution_id, victim))}
                processing = {r["account_id"] for r in logs if r["status"] == "processing"}
                done_now = [r for r in logs if r["status"] != "processing"]
                if len(done_now) >= 8 and len(processing & mine) >= 2:
                    break
                await asyncio.sleep(0.1)
            killed_at = time.monotonic()
            killed = hosts.kill_host(victim)
            assert killed

            # The schedule's ticks, one every 10 s, until the killed cycle is marked Crashed:
            # each is cancelled while the dead run still holds the deployment's slot.
            ticks: list[tuple[float, Any]] = []
            while True:
                run = await api.client.read_flow_run(cycle.id)
                if run.state_type.value in FINAL:
                    break
                assert time.monotonic() - killed_at < 300, "the killed cycle never ended"
                ticks.append((time.monotonic() - killed_at, await _start_cycle(api)))
                await asyncio.sleep(10)
            crashed_after = time.monotonic() - killed_at
            tick_states = [(t, (await api.wait_final(r.id, CYCLE_TIMEOUT_S)))
                           for t, r in ticks]
            # the next tick after the crash runs
            after = await api.wait_final((await _start_cycle(api)).id, CYCLE_TIMEOUT_S)
            return {"run": run, "victim": victim, "processing": processing,
                    "victims_own": len(processing & mine),
                    "crashed_after": crashed_after, "ticks": tick_states, "after": after,
                    "execution_id": execution_id}

    result = asyncio.run(go())
    run, after = result["run"], result["after"]
    assert run.state_type.value == "CRASHED", run.state
    assert ZOMBIE_AUTOMATION in (run.state.message or ""), run.state.message
    assert after.state_type.value == "COMPLETED", _diagnostics(hosts)
    # ticks that ran beside the dead cycle were cancelled; none after it was marked crashed
    for _, tick in result["ticks"]:
        assert tick.state_type.value in ("CANCELLED", "COMPLETED"), tick.state

    killed_cycle, next_cycle = result["execution_id"], str(after.id)
    done = {r["account_id"] for r in hosts.logs_of(killed_cycle) if r["status"] == "success"}
    ticks_done = {r["account_id"] for _, t in result["ticks"]
                  if t.state_type.value == "COMPLETED"
                  for r in hosts.logs_of(str(t.id)) if r["status"] == "success"}
    next_logs = hosts.logs_of(next_cycle)
    # every account synced within that cycle or the next
    assert set(hosts.ids) <= done | ticks_done | {
        r["account_id"] for r in next_logs if r["status"] == "success"}
    # No account blocked beyond one lease period: by the next cycle no dead holder's lease is
    # left. (An account the killed cycle's LIVE shards still work on is skipped, never waited
    # for, and that shard syncs it.)
    for row in next_logs:
        if row["status"] != "success":
            assert (row["status"], row["error_code"]) == ("skipped", "sync_in_progress"), row
            assert row["account_id"] in done, row
    victim_shard = _shards(hosts, killed_cycle).get(result["victim"])
    assert victim_shard is None  # the dead host never reported
    shard_runs = hosts.store.fetch_all(
        "select host, flow_run_id::text from sync_cycle_shards where execution_id = %s::uuid",
        (killed_cycle,))
    states = asyncio.run(_final_states([r["flow_run_id"] for r in shard_runs], hosts.api_url))
    by_host = {r["host"]: states[r["flow_run_id"]] for r in shard_runs}
    assert by_host.pop(result["victim"]) == "CRASHED"  # marked by the automation too
    assert set(by_host.values()) == {"COMPLETED"}, by_host
    # the dead syncs' rows were closed when their accounts were next claimed
    left = hosts.store.fetch_all(
        "select account_id::text, status, error_code from sync_logs"
        " where execution_id = %s::uuid and account_id = any(%s::uuid[])",
        (killed_cycle, sorted(result["processing"])))
    assert all(r["status"] != "processing" for r in left), left
    abandoned = [r for r in left if r["error_code"] == "abandoned"]
    assert all(r["status"] == "failed" for r in abandoned)
    # nothing lost or duplicated
    assert compare_with_broker(hosts.store, hosts.world).problems == []
    taken_over = hosts.store.fetch_all(
        "select count(*) as n from sync_cycle_claims where execution_id = %s::uuid"
        " and claims > 1", (killed_cycle,))[0]["n"]
    skipped_next = sum(r["status"] == "skipped" for r in next_logs)
    print(f"\nkilled {result['victim']} (it ran the cycle) with {len(result['processing'])} "
          f"syncs in flight, {result['victims_own']} of them its own; cycle marked Crashed "
          f"after {result['crashed_after']:.0f}s; ticks "
          f"meanwhile: {[(round(t), r.state_type.value) for t, r in result['ticks']]}; "
          f"{taken_over} accounts taken over by live hosts within the killed cycle, "
          f"{len(abandoned)} syncs closed as abandoned; the next cycle: "
          f"{after.total_run_time.total_seconds():.1f}s run time, "
          f"{sum(r['status'] == 'success' for r in next_logs)} success, {skipped_next} skipped "
          f"(a live holder), 0 waited on a lease")
