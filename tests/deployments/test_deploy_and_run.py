"""The proof on Linux: deploy prefect.yaml, run it on a process worker, check the database.

Everything as on the Windows host except the terminal: a real Prefect server (on Postgres),
the process work pool made by ``python -m mt5_sync.deployments.bootstrap``, ``prefect deploy
--all`` reading prefect.yaml, a ``prefect worker start`` subprocess running the flows in their own
processes, terminal worker processes running the real adapter (mt5_sync/terminal/session.py)
against the simulated MetaTrader5 module through the one import seam (MT5SYNC_MT5_MODULE),
and three "installs" in MT5SYNC_TERMINAL_PATHS shared, under the slot locks, by the scheduled
cycle and two manual syncs running at the same time in separate processes.

Then it checks the database, that two processes never drove one install at once, that no
investor password (nor the key) reached Prefect's storage, and — with coverage collected in
the terminal worker processes (started there by tests/deployments/sim_mt5.py) — that the
adapter's auth-failure, IPC-timeout and login-mismatch paths really ran in those processes.
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
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mt5_sync.credentials import encrypt_password, generate_key
from mt5_sync.localstack import EmbeddedPostgres, PrefectServer, prefect_client_env
from mt5_sync.mt5sim.world import FixedLatency, build_world
from mt5_sync.store.postgres import PostgresStore
from tests.terminal.test_slotlock import interleavings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION_PY = REPO_ROOT / "mt5_sync" / "terminal" / "session.py"
USER_ID = "00000000-0000-4000-8000-00000000d3f1"
POOL = "mt5-windows"
RUN_TIMEOUT_S = 150
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


# ---------------------------------------------------------------- helpers


def prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@contextlib.contextmanager
def process_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``prefect worker start`` for the pool; stopped (whole process group) on exit."""
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [prefect_bin(), "worker", "start", "--pool", POOL, "--name", "linux-proof"],
            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(5)


def line_after(marker: str, offset: int = 0) -> int:
    """1-based line number of the first line of session.py containing ``marker``, + offset."""
    for number, text in enumerate(SESSION_PY.read_text().splitlines(), start=1):
        if marker in text:
            return number + offset
    raise AssertionError(f"{marker!r} not in session.py")


def terminal_workers_of(world_path: Path) -> list[Any]:
    """Live terminal worker processes started for this test's world."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "mt5_sync.terminal.worker" not in " ".join(proc.info.get("cmdline") or []):
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("MT5SIM_WORLD") == str(world_path):
                found.append(proc)
    return found


def wait_for_terminal_workers_to_exit(world_path: Path, timeout: float = 30) -> list[int]:
    """Flow runs close their pools when they end: no terminal worker may outlive its run."""
    deadline = time.monotonic() + timeout
    while (left := terminal_workers_of(world_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [p.pid for p in left]


class Api:
    """The few Prefect API calls the test needs (a client bound to the test server)."""

    def __init__(self, api_url: str) -> None:
        from prefect.client.orchestration import PrefectClient

        self.url = api_url
        self.client = PrefectClient(api=api_url)

    async def __aenter__(self) -> Api:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(*exc)

    async def wait_final(self, run_id: Any, timeout: float = RUN_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.client.read_flow_run(run_id)
            if run.state is not None and run.state.type.value in FINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run.name} still {run.state_type} after "
                                     f"{timeout}s")
            await asyncio.sleep(0.5)

    async def wait_state(self, run_id: Any, states: tuple[str, ...], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.client.read_flow_run(run_id)
            if run.state is not None and run.state.type.value in states:
                return run
            assert time.monotonic() < deadline, f"{run.name} never reached {states}"
            await asyncio.sleep(0.2)

    async def runs_of(self, deployment_id: Any) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        return list(await self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))

    async def pause_schedules_and_drop_scheduled_runs(self, deployment: Any) -> None:
        """The test starts its runs itself: no 5-minute tick may start a cycle meanwhile."""
        for schedule in deployment.schedules:
            await self.client.update_deployment_schedule(deployment.id, schedule.id,
                                                         active=False)
        for run in await self.runs_of(deployment.id):
            if run.state_type is not None and run.state_type.value == "SCHEDULED":
                await self.client.delete_flow_run(run.id)

    async def everything_since(self, since: datetime) -> dict[str, str]:
        """Flow runs, task runs, artifacts and logs created since ``since``, as JSON text."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterId,
            LogFilter,
            LogFilterTimestamp,
        )

        async def paged(read: Any, **kwargs: Any) -> list[Any]:
            out: list[Any] = []
            while True:
                page = await read(limit=200, offset=len(out), **kwargs)
                out += page
                if len(page) < 200:
                    return out

        runs = await paged(self.client.read_flow_runs, flow_run_filter=FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(after_=since - timedelta(hours=1))))
        ids = [r.id for r in runs]
        tasks = await paged(self.client.read_task_runs, flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=ids)))
        logs = await paged(self.client.read_logs, log_filter=LogFilter(
            timestamp=LogFilterTimestamp(after_=since)))
        artifacts = await paged(self.client.read_artifacts)
        dump = lambda items: json.dumps([i.model_dump(mode="json") for i in items])  # noqa: E731
        return {"flow runs (parameters, states)": dump(runs), "task runs": dump(tasks),
                "logs": dump(logs), "artifacts": dump(artifacts),
                "_counts": json.dumps([len(runs), len(tasks), len(logs), len(artifacts)])}


def scan_database(uri: str, secrets: list[str]) -> list[str]:
    """Every row of every table whose text form contains a secret: '<table>: n rows'."""
    import psycopg

    hits = []
    with psycopg.connect(uri) as conn:
        tables = [r[0] for r in conn.execute(
            "select format('%I.%I', table_schema, table_name) from information_schema.tables "
            "where table_type = 'BASE TABLE' and table_schema not in "
            "('pg_catalog', 'information_schema')").fetchall()]
        for table in tables:
            condition = " or ".join(["strpos(t::text, %s) > 0"] * len(secrets))
            n = conn.execute(f"select count(*) from {table} t where {condition}",
                             secrets).fetchone()[0]
            if n:
                hits.append(f"{table}: {n} rows")
    return hits


# ---------------------------------------------------------------- the test


def test_deploy_prefect_yaml_and_run_it_on_a_process_worker(
    prefect_server: PrefectServer, pg: EmbeddedPostgres, db_url: str, tmp_path: Path
) -> None:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    # --- a world of five accounts: healthy, wrong password, an IPC timeout that heals on
    # retry, one whose terminal answers for another login, healthy.
    world = build_world(
        # the worker's flow runs on the machine's clock: pin the broker's at the same instant
        5, seed=33, now_utc=started, timeline_start_utc=started - timedelta(days=10),
        latency=FixedLatency(seconds=0.05), state_dir=str(tmp_path / "sim-state"),
        faults={1: [{"kind": "wrong_password", "call": "login"}],
                2: [{"kind": "ipc_timeout", "call": "history_deals_get", "times": 1}]},
    )
    world_path = world.save(tmp_path / "world.json")
    crosswired = world.accounts[3].login
    key = generate_key()
    store = PostgresStore(db_url)
    store.ensure_user(USER_ID, "deploy@example.com")
    ids = [
        store.register_account(
            user_id=USER_ID, login_number=a.login, broker_server=a.server,
            broker_name=a.company, investor_password_encrypted=encrypt_password(a.password, key),
            server_time_rule=a.time_rule,
        )
        for a in world.accounts
    ]
    installs = []
    for i in range(3):
        exe = tmp_path / f"MT5-{i}" / "terminal64.exe"
        exe.parent.mkdir()
        exe.write_text("portable install stand-in")
        installs.append(str(exe))
    calls_log = tmp_path / "terminal-calls.jsonl"
    cov_dir = tmp_path / "coverage"
    cov_dir.mkdir()
    coveragerc = tmp_path / "coveragerc"
    coveragerc.write_text(
        "[run]\nparallel = True\n"
        f"data_file = {cov_dir / '.coverage'}\ninclude = */mt5_sync/terminal/*\n"
    )

    env = prefect_client_env(tmp_path / "home")
    env.update({
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
        "MT5SIM_COVERAGE_RC": str(coveragerc),  # measured in the terminal workers
        # what the Windows host's worker environment holds (docs/windows-runbook.md)
        "MT5SYNC_PROJECT_DIR": str(REPO_ROOT),
        "DATABASE_URL": db_url,
        "MT5SYNC_CREDENTIALS_KEY": key,
        "MT5SYNC_TERMINAL_BACKEND": "simulated",
        "MT5SYNC_TERMINAL_PATHS": ";".join(installs),
        "MT5SYNC_TERMINAL_TIMEOUT_S": "30",
        "MT5SYNC_FETCH_RETRIES": "1",
        "MT5SYNC_RETRY_BACKOFF_S": "0.1",
        "MT5SYNC_LEASE_WAIT_S": "60",
        # the simulated MetaTrader5 behind the adapter's one import seam
        "MT5SYNC_MT5_MODULE": "tests.deployments.sim_mt5",
        "MT5SIM_WORLD": str(world_path),
        "MT5SIM_CROSSWIRED_LOGINS": str(crosswired),
        "MT5SIM_CALL_LOG": str(calls_log),
    })
    # (an outer `coverage run` must not trace the Prefect processes: this test measures the
    # terminal workers itself)
    for name in ("MT5SYNC_SIM_WORLD", "MT5SYNC_SIMULATED_SLOTS", "MT5SYNC_CREDENTIALS_KEY_BLOCK",
                 "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
        env.pop(name, None)

    # --- the pool, then the deployments, from prefect.yaml with the real CLI
    phases: dict[str, float] = {"setup": time.monotonic() - t0}
    out = run_cli([sys.executable, "-m", "mt5_sync.deployments.bootstrap"], env)
    assert f"work pool '{POOL}' (process)" in out
    out = run_cli([prefect_bin(), "--no-prompt", "deploy", "--all"], env, timeout=180)
    for name in ("scheduled-sync", "manual-sync", "backfill"):
        assert name in out, out
    phases["pool + deploy"] = time.monotonic() - t0

    sync_id = str(uuid.uuid4())

    async def go() -> dict[str, Any]:
        async with Api(prefect_server.api_url) as api:
            client = api.client
            pool = await client.read_work_pool(POOL)
            assert pool.type == "process"
            scheduled = await client.read_deployment_by_name("sync-trading-data/scheduled-sync")
            manual = await client.read_deployment_by_name("sync-account/manual-sync")
            backfill = await client.read_deployment_by_name("sync-trading-data/backfill")
            [schedule] = scheduled.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
                "*/5 * * * *", "UTC", True)
            assert scheduled.global_concurrency_limit.limit == 1
            assert scheduled.concurrency_options.collision_strategy == "CANCEL_NEW"
            for d in (scheduled, manual, backfill):
                assert d.work_pool_name == POOL
                assert d.job_variables["env"]["PYTHONUTF8"] == "1"
                assert d.pull_steps == [
                    {"mt5_sync.deployments.steps.set_project_working_directory": {}}]
            assert backfill.parameters == {"trigger": "backfill", "sync_type": "full"}
            automations = await client.read_resource_related_automations(
                f"prefect.deployment.{manual.id}")
            assert [a.trigger.expect for a in automations] == [{"mt5.sync.requested"}]
            await api.pause_schedules_and_drop_scheduled_runs(scheduled)

            with process_worker(env, tmp_path / "worker.log"):
                # The cycle, and beside it two manual syncs in their own processes: one of
                # an account the cycle also syncs (the lease orders them), one by event.
                cycle = await client.create_flow_run_from_deployment(scheduled.id)
                by_api = await client.create_flow_run_from_deployment(
                    manual.id, parameters={"account_id": ids[0], "account_label": "by-api"})
                response = httpx.post(f"{api.url}/events", json=[{
                    "id": sync_id, "occurred": datetime.now(UTC).isoformat(),
                    "event": "mt5.sync.requested",
                    "resource": {"prefect.resource.id": f"mt5.account.{ids[4]}",
                                 "prefect.resource.name": "by-event"},
                    "payload": {"account_id": ids[4], "sync_id": sync_id,
                                "sync_type": "incremental", "sync_history": True,
                                "history_days": 7, "account_label": "by-event",
                                "trigger": "manual"},
                }], timeout=10)
                assert response.status_code in (200, 202, 204), response.text
                # A second cycle while the first runs is cancelled, never run beside it.
                await api.wait_state(cycle.id, ("RUNNING", *FINAL), RUN_TIMEOUT_S)
                overlap = await client.create_flow_run_from_deployment(scheduled.id)

                deadline = time.monotonic() + 60
                # The session's Prefect server may hold earlier runs of the same deployment
                # (other test modules use it too): pick this event's run by its sync_id.
                while not (by_event := [r for r in await api.runs_of(manual.id)
                                        if r.parameters.get("sync_id") == sync_id]):
                    assert time.monotonic() < deadline, "the event started no manual-sync run"
                    await asyncio.sleep(0.5)
                runs = {
                    "cycle": await api.wait_final(cycle.id),
                    "by_api": await api.wait_final(by_api.id),
                    "by_event": await api.wait_final(by_event[0].id),
                    "overlap": await api.wait_final(overlap.id),
                }
                phases["runs"] = time.monotonic() - t0
                # before the worker stops: every run's terminal workers exit with the run
                lingering = await asyncio.to_thread(wait_for_terminal_workers_to_exit,
                                                    world_path)
            return {"runs": runs, "lingering": lingering,
                    "storage": await api.everything_since(started)}

    result = asyncio.run(go())
    runs = result["runs"]
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert runs["cycle"].state_type.value == "COMPLETED", worker_log[-5000:]
    assert runs["by_api"].state_type.value == "COMPLETED", worker_log[-5000:]
    assert runs["by_event"].state_type.value == "COMPLETED", worker_log[-5000:]
    assert runs["overlap"].state_type.value == "CANCELLED", runs["overlap"].state
    assert result["lingering"] == [], "terminal workers outlived their flow runs"
    # The event's payload reached the flow with its types (Prefect 3.8 jinja -> JSON).
    assert runs["by_event"].parameters == {
        "account_id": ids[4], "sync_id": sync_id, "sync_type": "incremental",
        "sync_history": True, "history_days": 7, "account_label": "by-event",
        "trigger": "manual"}

    # --- the database
    logs = store.fetch_all(
        "select a.login_number as login, l.trigger, l.status, l.error_code, l.flow_run_id "
        "from sync_logs l join trading_accounts a on a.id = l.account_id")
    scheduled_rows = {r["login"]: r for r in logs if r["trigger"] == "scheduled"}
    logins = [a.login for a in world.accounts]
    # The manual syncs of accounts 0 and 4 run beside the cycle: whichever takes the lease
    # first syncs the account, and the cycle never waits for a live holder (it skips it, the
    # manual one syncs it).
    for beside in (logins[0], logins[4]):
        assert (scheduled_rows[beside]["status"], scheduled_rows[beside]["error_code"]) in (
            ("success", None), ("skipped", "sync_in_progress")), scheduled_rows[beside]
    assert {k: (v["status"], v["error_code"]) for k, v in scheduled_rows.items()
            if k not in (logins[0], logins[4])} == {
        logins[1]: ("failed", "auth_failed"),
        logins[2]: ("success", None),  # the IPC timeout was retried on a re-initialised slot
        logins[3]: ("failed", "account_mismatch"),
    }
    manual_rows = sorted((r["login"], r["status"]) for r in logs if r["trigger"] == "manual")
    assert manual_rows == sorted([(logins[0], "success"), (logins[4], "success")])
    trades = store.fetch_all(
        "select a.login_number as login, count(t.*) as n from trading_accounts a "
        "left join trades t on t.account_id = a.id group by 1")
    per_login = {r["login"]: r["n"] for r in trades}
    assert all(per_login[logins[i]] > 0 for i in (0, 2, 4)), per_login
    assert per_login[logins[1]] == per_login[logins[3]] == 0

    # --- the slot locks: three processes (cycle, two manual syncs) shared three installs,
    # and no install ever saw a call of one process inside another's fetch.
    calls = [json.loads(line) for line in calls_log.read_text().splitlines()]
    assert {c["path"] for c in calls} <= set(installs)
    assert len({c["pid"] for c in calls}) >= 3
    assert interleavings(calls_log) == []
    assert all((Path(p).parent / "mt5sync-slot.lock").exists() for p in {c["path"] for c in calls})

    # --- no investor password, and not the key, in anything Prefect stored
    storage = result["storage"]
    counts = json.loads(storage.pop("_counts"))
    assert all(n > 0 for n in counts), counts  # the scan looked at real data
    result_files = [p for p in (tmp_path / "home" / "results").rglob("*") if p.is_file()]
    assert result_files, "the fetch task persists its result: the scan must see it"
    secrets = [a.password for a in world.accounts] + [key]
    leaks = [f"{where} contains secret #{i}" for where, text in storage.items()
             for i, s in enumerate(secrets) if s in text]
    leaks += [f"result file {p.name} contains secret #{i}" for p in result_files
              for i, s in enumerate(secrets) if s.encode() in p.read_bytes()]
    leaks += [f"worker output contains secret #{i}" for i, s in enumerate(secrets)
              if s in worker_log]
    leaks += [f"prefect database {hit}" for hit in scan_database(pg.uri("prefect"), secrets)]
    leaks += [f"app database {hit}" for hit in scan_database(db_url, secrets)]
    assert leaks == []

    # --- coverage from the terminal worker subprocesses: the adapter's paths ran there
    import coverage

    cov = coverage.Coverage(config_file=str(coveragerc))
    cov.combine(data_paths=[str(cov_dir)])
    measured = cov.get_data()
    executed = set(measured.lines(str(SESSION_PY)) or [])
    expected = {
        "auth failure (-6)": line_after("if code == RES_E_AUTH_FAILED:", 1),
        "IPC timeout (-10005) classified transient": line_after("if code in IPC_CODES:", 1),
        "IPC fault drops the connection": line_after("self.reset()  # IPC faults"),
        "re-initialise after the fault": line_after("if not self._mt5.initialize(**kwargs):"),
        "login mismatch": line_after("raise AccountMismatch("),
        "post-login check": line_after("if int(info.login) != credentials.login"),
        "shutdown on exit": line_after("self._mt5.shutdown()"),
    }
    missing = {what: n for what, n in expected.items() if n not in executed}
    assert missing == {}, f"not run in the terminal workers: {missing}"
    _, statements, _, missed, _ = cov.analysis2(str(SESSION_PY))
    phases["checks"] = time.monotonic() - t0
    print(f"\nsession.py in the terminal workers: {len(statements) - len(missed)}/"
          f"{len(statements)} statements (def lines ran before coverage started); "
          f"checked paths {expected}; not run there: {missed}; "
          f"elapsed at end of each phase: {phases}")
