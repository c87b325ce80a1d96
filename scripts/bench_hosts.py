"""Capacity with 1, 2, 3 hosts: accounts one budgeted cycle syncs, deployed as in production.

What runs (nothing is mocked but the broker): the embedded PostgreSQL and a real Prefect server
(``mt5_sync.localstack``); the pool, the automation and the four deployments from prefect.yaml
(``deployments.bootstrap``, ``prefect deploy --all``); per host, ``mt5-sync worker --host
host-<i>`` (a real process worker on its own queue) with ``--slots`` simulated terminals; N
accounts whose terminal time is lognormal (median 1.5 s, sigma 0.8: the distribution of
``scripts/bench_cycle.py``). One ``scheduled-sync`` run with ``cycle_budget_s=--budget`` per
host count, on a fresh copy of the accounts: the figure is how many accounts it synced, and
what that is per 5-minute cycle (budget 270 s).

Every host here shares this machine's cores: the hosts' terminals are separate, but the Prefect
bookkeeping of all of them runs on the same CPUs, so past some point more hosts stop adding
capacity HERE while on real, separate Windows hosts they would not. The report gives the load.

    python scripts/bench_hosts.py --accounts 1500 --slots 5 --budget 90 --hosts 1,2,3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_cycle import build_and_register, machine_busy  # noqa: E402

CYCLE_S = 270


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise SystemExit(f"{cmd} failed:\n{done.stdout}\n{done.stderr}")


async def _cycle(api_url: str, budget: float, timeout: float) -> tuple[str, str, float]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api_url) as client:
        deployment = await client.read_deployment_by_name("sync-trading-data/scheduled-sync")
        for schedule in deployment.schedules:
            await client.update_deployment_schedule(deployment.id, schedule.id, active=False)
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"cycle_budget_s": budget})
        started = time.monotonic()
        while True:
            run = await client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                return str(run.id), run.state.type.value, time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise SystemExit(f"the cycle did not end within {timeout:g}s")
            await asyncio.sleep(1)


async def _wait_live(api_url: str, hosts: list[str]) -> None:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api_url) as client:
        for _ in range(240):
            queues = await client.read_work_queues(work_pool_name="mt5-windows")
            if set(hosts) <= {q.name for q in queues if q.last_polled is not None}:
                return
            await asyncio.sleep(0.5)
    raise SystemExit(f"hosts never polled: {hosts}")


def one_run(args: argparse.Namespace, stack: Any, root: Path, n_hosts: int) -> dict[str, Any]:
    from mt5_sync.store.migrations import apply_migrations
    from mt5_sync.store.postgres import PostgresStore

    db_url = stack.postgres.create_database(f"hosts{n_hosts}", drop=True)
    apply_migrations(db_url)
    run_root = root / f"h{n_hosts}"
    run_root.mkdir()
    setup = build_and_register(args, run_root, db_url)
    env = dict(os.environ)
    env.update(stack.prefect_env())
    env.update({
        "DATABASE_URL": db_url, "MT5SYNC_CREDENTIALS_KEY": setup["key"],
        "MT5SIM_WORLD": str(setup["world_path"]), "MT5SYNC_TERMINAL_BACKEND": "simulated",
        "MT5SYNC_SIMULATED_SLOTS": str(args.slots), "MT5SYNC_MAX_CONCURRENCY": str(args.slots),
        "MT5SYNC_INITIAL_HISTORY_DAYS": str(args.history_days),
        "MT5SYNC_PROJECT_DIR": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    })
    for name in ("MT5SYNC_TERMINAL_PATHS", "MT5SYNC_HOST"):
        env.pop(name, None)
    hosts = [f"host-{i}" for i in range(1, n_hosts + 1)]
    workers = []
    for host in hosts:
        log = (run_root / f"worker-{host}.log").open("wb")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "mt5_sync.cli", "worker", "--host", host], env=env, cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        asyncio.run(_wait_live(stack.prefect.api_url, hosts))
        busy_before = machine_busy()
        execution_id, state, wall = asyncio.run(
            _cycle(stack.prefect.api_url, args.budget, args.budget + 600))
        busy_after = machine_busy()
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)
    store = PostgresStore(db_url)
    rows = store.fetch_all(
        "select status, count(*) as n from sync_logs where execution_id = %s::uuid group by 1",
        (execution_id,))
    by_status = {r["status"]: r["n"] for r in rows}
    claims = store.fetch_all(
        "select host, count(*) filter (where outcome = 'claimed') as n from sync_cycle_claims"
        " where execution_id = %s::uuid group by 1 order by 1", (execution_id,))
    synced = by_status.get("success", 0) + by_status.get("partial", 0)
    cpu_busy = (busy_after[0] - busy_before[0]) / max(
        1e-9, (busy_after[1] - busy_before[1]) * (os.cpu_count() or 1))
    return {
        "hosts": n_hosts, "terminals": n_hosts * args.slots, "state": state,
        "wall_s": round(wall, 1), "synced": synced, "by_status": by_status,
        "per_host": {c["host"]: c["n"] for c in claims},
        "per_5min_cycle": round(synced * CYCLE_S / args.budget) if args.budget < CYCLE_S
        else synced,
        "cpu_busy_of_machine": round(cpu_busy, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--accounts", type=int, default=1500)
    p.add_argument("--slots", type=int, default=5, help="terminals per host")
    p.add_argument("--hosts", default="1,2,3", help="host counts to run, comma separated")
    p.add_argument("--budget", type=float, default=90.0, help="the cycle's budget (s)")
    p.add_argument("--median", type=float, default=1.5)
    p.add_argument("--sigma", type=float, default=0.8)
    p.add_argument("--call-latency", type=float, default=0.0)
    p.add_argument("--history-days", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)

    from mt5_sync.localstack import short_root, start_local_stack

    root = short_root("mt5h-")
    stack = start_local_stack(root)
    out: list[dict[str, Any]] = []
    try:
        env = dict(os.environ)
        env.update(stack.prefect_env())
        env["MT5SYNC_PROJECT_DIR"] = str(REPO)
        _run([sys.executable, "-m", "mt5_sync.deployments.bootstrap"], env)
        _run([_prefect(), "--no-prompt", "deploy", "--all"], env)
        for n in [int(x) for x in args.hosts.split(",")]:
            print(f"[bench] {n} host(s) x {args.slots} terminals, {args.accounts} accounts, "
                  f"budget {args.budget:g}s ...", flush=True)
            result = one_run(args, stack, root, n)
            print(f"[bench] {json.dumps(result)}", flush=True)
            out.append(result)
    finally:
        stack.stop()
    print("\nhosts  terminals  synced in budget  per 5-min cycle  per host claims  CPU busy")
    base = out[0]["synced"] if out else 0
    for r in out:
        print(f"{r['hosts']:>5}  {r['terminals']:>9}  {r['synced']:>16}  "
              f"{r['per_5min_cycle']:>15}  {json.dumps(r['per_host']):>15}  "
              f"{r['cpu_busy_of_machine']:.2f}  (x{r['synced'] / max(1, base):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
