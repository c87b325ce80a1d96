"""Benchmark one sync cycle: ours (the real parent flow) against the ideal and the seed's design.

What runs (nothing is mocked but the broker):

* an embedded PostgreSQL holding the app database and the Prefect server's, and a real
  ``prefect server`` on it (``mt5_sync.localstack.start_local_stack``);
* N simulated accounts whose per-account terminal time is lognormal (median 1.5 s, sigma 0.8
  by default), given to the simulator as each account's ``login_delay_s``;
* **ours**: the real ``sync-trading-data`` flow in its own process (as ``mt5-sync sync``
  runs it), with real terminal worker processes and real commits through
  ``mt5_commit_account_sync``;
* **seed**: the Edge Function's algorithm on the same accounts and latencies, in its own
  process, against a copy of the same database: batches of 10, each batch fully settled
  (``asyncio.gather(..., return_exceptions=True)`` = ``Promise.allSettled``) before a 100 ms
  pause and the next batch. Each account does exactly what ours does minus Prefect and minus
  the lease / "processing" row: read the account, the same terminal worker pool's fetch, the
  same transform, the same atomic commit. Above ``--seed-run-max`` accounts the seed's wall
  time is *modelled* from the same latencies (sum over batches of the slowest member + the
  per-account non-terminal time measured in the real seed run + 0.1 s per pause); at N where
  both exist the model is printed beside the measurement.

Figures: wall; ideal = sum(per-account terminal time) / slots; efficiency = ideal / wall;
per-account Prefect overhead (time an account's subflow ran minus the time spent queued for a
terminal, in the terminal, in the app's database calls and in the transform); commit ms per
account; max in flight (the flow's gauge and, independently, the overlap of sync_logs
intervals); terminals busy (peak and time-weighted mean, from the terminal pool's records);
peak RSS of the flow process and of the terminal workers (psutil sampling + getrusage); CPU
seconds of the flow process, the workers and the Prefect server; the machine's load.

    python scripts/bench_cycle.py --accounts 100
    python scripts/bench_cycle.py --accounts 1000 --json docs/bench/cycle-1000.json
    python scripts/bench_cycle.py --accounts 5000 --budget 270      # the deadline at 5,000
    python scripts/bench_cycle.py --accounts 1000 --prefect-api-workers 2   # scaled server

Long runs: ``nohup python scripts/bench_cycle.py --accounts 5000 > bench.log 2>&1 &``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH_USER = "00000000-0000-4000-8000-0000000000be"
SEED_BATCH = 10
SEED_PAUSE_S = 0.1


# ---------------------------------------------------------------------------- helpers


def lognormal_sampler(median_s: float, sigma: float) -> Any:
    mu = math.log(median_s) if median_s > 0 else 0.0

    def sample(rng: random.Random) -> float:
        return 0.0 if median_s <= 0 else round(rng.lognormvariate(mu, sigma), 4)

    return sample


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def seed_model(latencies: list[float], per_account_extra_s: float) -> float:
    """The seed's wall time on these latencies: each batch of 10 waits for its slowest member
    (terminal time + the non-terminal time each account costs), then pauses 100 ms."""
    batches = [latencies[i:i + SEED_BATCH] for i in range(0, len(latencies), SEED_BATCH)]
    wall = sum(max(t + per_account_extra_s for t in b) for b in batches)
    return wall + SEED_PAUSE_S * max(0, len(batches) - 1)


class Sampler:
    """Samples RSS of a process and of its descendants (the terminal workers) every 0.2 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak_main = 0
        self.peak_children_sum = 0
        self.peak_child = 0
        self.children_seen: set[int] = set()
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        import psutil

        t0 = time.monotonic()
        while not self._stop.wait(0.2):
            try:
                main = self.proc.memory_info().rss
                kids = self.proc.children(recursive=True)
            except psutil.Error:
                return
            total = 0
            for kid in kids:
                try:
                    rss = kid.memory_info().rss
                except psutil.Error:
                    continue
                self.children_seen.add(kid.pid)
                total += rss
                self.peak_child = max(self.peak_child, rss)
            self.peak_main = max(self.peak_main, main)
            self.peak_children_sum = max(self.peak_children_sum, total)
            self.samples.append((time.monotonic() - t0, main, total))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def process_tree_cpu(pid: int) -> float:
    """User+system CPU seconds of a live process and its live descendants."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return total


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds summed over cores, wall) counter, for the load during a run."""
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(
        t, "softirq", 0.0)
    return busy, time.monotonic()


# ---------------------------------------------------------------------------- setup


def build_and_register(args: argparse.Namespace, root: Path, app_url: str) -> dict[str, Any]:
    from mt5_sync.credentials import encrypt_password, generate_key
    from mt5_sync.mt5sim.world import FixedLatency, build_world
    from mt5_sync.store.postgres import PostgresStore

    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    world = build_world(
        args.accounts,
        seed=args.seed,
        now_utc=now,
        timeline_start_utc=now - timedelta(days=args.history_days + 5),
        latency=FixedLatency(seconds=args.call_latency),
        login_delay_sampler=lognormal_sampler(args.median, args.sigma),
        trades_per_day=(0.5, 3.0),
        state_dir=str(root / "sim-state"),
    )
    world_path = world.save(root / "world.json")
    key = generate_key()
    store = PostgresStore(app_url)
    store.ensure_user(BENCH_USER, "bench@example.com")
    rows = [
        (BENCH_USER, a.login, a.server, a.company, encrypt_password(a.password, key), a.time_rule)
        for a in world.accounts
    ]
    with store.connection() as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into public.trading_accounts (user_id, login_number, broker_server,"
            " broker_name, investor_password_encrypted, server_time_rule)"
            " values (%s::uuid, %s, %s, %s, %s, %s)",
            rows,
        )
    delays = {(a.login, a.server): a.login_delay_s for a in world.accounts}
    return {"world_path": world_path, "key": key, "delays": delays, "world": world}


def flow_env(stack: Any, db_url: str, world_path: Path, key: str, args: argparse.Namespace
             ) -> dict[str, str]:
    env = dict(os.environ)
    env.update(stack.prefect_env())
    env.update(
        {
            "DATABASE_URL": db_url,
            "MT5SYNC_CREDENTIALS_KEY": key,
            "MT5SIM_WORLD": str(world_path),
            "MT5SYNC_TERMINAL_BACKEND": "simulated",
            "MT5SYNC_SIMULATED_SLOTS": str(args.slots),
            "MT5SYNC_MAX_CONCURRENCY": str(args.slots),
            "MT5SYNC_INITIAL_HISTORY_DAYS": str(args.history_days),
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    if args.budget is not None:
        env["MT5SYNC_CYCLE_BUDGET_S"] = str(args.budget)
    if args.queued is not None:
        env["MT5SYNC_QUEUED_ACCOUNTS"] = str(args.queued)
    return env


# ---------------------------------------------------------------------------- child modes


def _count_http_requests() -> Counter[str]:
    """Count this process's HTTP requests by method and path (ids folded): Prefect API calls
    per account are what the server's CPU scales with."""
    import re

    import httpx

    counts: Counter[str] = Counter()
    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    real_async, real_sync = httpx.AsyncClient.send, httpx.Client.send

    async def send_async(self: Any, request: Any, *a: Any, **k: Any) -> Any:
        counts[f"{request.method} {ids.sub('{id}', request.url.path)}"] += 1
        return await real_async(self, request, *a, **k)

    def send_sync(self: Any, request: Any, *a: Any, **k: Any) -> Any:
        counts[f"{request.method} {ids.sub('{id}', request.url.path)}"] += 1
        return real_sync(self, request, *a, **k)

    httpx.AsyncClient.send = send_async  # type: ignore[method-assign]
    httpx.Client.send = send_sync  # type: ignore[method-assign]
    return counts


def child_flow(out: Path, profile: str | None) -> int:
    """Run the real parent flow in this process (as ``mt5-sync sync`` does)."""
    http_requests = _count_http_requests()
    from mt5_sync.flows.sync_trading_data import sync_trading_data
    from mt5_sync.terminal.pool import close_all_pools

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005, async_mode="disabled")
        profiler.start()
    t0 = time.monotonic()
    summary = asyncio.run(sync_trading_data())
    wall = time.monotonic() - t0
    if profiler is not None and profile:
        profiler.stop()
        Path(profile).write_text(profiler.output_html())
        Path(profile).with_suffix(".txt").write_text(
            profiler.output_text(unicode=False, color=False, show_all=False)
        )
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    close_all_pools()  # reap the workers so RUSAGE_CHILDREN counts them
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.write_text(json.dumps({
        "wall_s": wall,
        "summary": summary,
        "self_cpu_s": self_usage.ru_utime + self_usage.ru_stime,
        "self_maxrss_mb": self_usage.ru_maxrss / 1024,
        "children_cpu_s": kids.ru_utime + kids.ru_stime,
        "children_maxrss_mb": kids.ru_maxrss / 1024,
        "http_requests": dict(http_requests.most_common()),
    }, default=str))
    return 0


async def _seed_cycle(limit: int | None) -> dict[str, Any]:
    """The seed's algorithm on our plumbing, without Prefect (see module docstring)."""
    import uuid

    from mt5_sync.contracts import Credentials, FetchRequest, FetchResult
    from mt5_sync.credentials import decrypt_password
    from mt5_sync.settings import load_settings
    from mt5_sync.store.postgres import PooledPostgresStore
    from mt5_sync.sync.window import plan_fetch_window
    from mt5_sync.terminal.pool import get_terminal_pool
    from mt5_sync.transform.payload import SyncContext, build_commit_payload

    settings = load_settings()
    # the same pooled store the pipeline uses (tasks/runtime.py)
    store = PooledPostgresStore(settings.require_database_url(),
                                max_size=settings.slot_count + 4)
    store.open()
    pool = get_terminal_pool(settings)
    loop = asyncio.get_running_loop()
    from concurrent.futures import ThreadPoolExecutor

    db = ThreadPoolExecutor(max_workers=24)
    key = settings.credentials_key.get_secret_value() if settings.credentials_key else None
    accounts = store.list_active_accounts()[: limit or None]
    execution_id = str(uuid.uuid4())

    async def one(account_id: str) -> dict[str, Any]:
        t0 = time.monotonic()
        started = datetime.now(UTC)
        acc = await loop.run_in_executor(db, store.get_account, account_id)
        assert acc is not None
        window = plan_fetch_window(
            requested_type="incremental", history_cursor=acc.history_cursor,
            time_rule=acc.server_time_rule, now_utc=started,
            initial_history_days=settings.initial_history_days,
            overlap_hours=settings.history_overlap_hours,
        )
        request = FetchRequest(
            account_id=account_id,
            credentials=Credentials(acc.login_number, acc.broker_server,
                                    decrypt_password(acc.investor_password_encrypted, key)),
            date_from=window.date_from_server, date_to=window.date_to_server,
        )
        result: FetchResult = await loop.run_in_executor(pool.executor, pool.fetch, request)
        ctx = SyncContext(
            sync_id=str(uuid.uuid4()), account_id=account_id, execution_id=execution_id,
            flow_run_id=None, trigger="scheduled", sync_type=window.sync_type,
            started_at=started, time_rule=acc.server_time_rule,
        )
        payload, _ = await loop.run_in_executor(
            db, lambda: build_commit_payload(result, ctx, completed_at=datetime.now(UTC)))
        c0 = time.monotonic()
        await loop.run_in_executor(db, store.commit_account_sync, payload)
        return {"login": acc.login_number, "server": acc.broker_server,
                "slot_ms": (time.monotonic() - t0) * 1000, "terminal_ms": result.terminal_ms,
                "commit_ms": (time.monotonic() - c0) * 1000}

    t0 = time.monotonic()
    results: list[Any] = []
    for start in range(0, len(accounts), SEED_BATCH):
        if start:
            await asyncio.sleep(SEED_PAUSE_S)
        batch = accounts[start:start + SEED_BATCH]
        results.extend(await asyncio.gather(*(one(a.id) for a in batch), return_exceptions=True))
    wall = time.monotonic() - t0
    ok = [r for r in results if isinstance(r, dict)]
    return {"wall_s": wall, "accounts": len(accounts), "ok": len(ok),
            "errors": [repr(r) for r in results if not isinstance(r, dict)][:5], "results": ok}


def child_seed(out: Path, limit: int | None) -> int:
    from mt5_sync.terminal.pool import close_all_pools

    data = asyncio.run(_seed_cycle(limit))
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    close_all_pools()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    data.update(self_maxrss_mb=self_usage.ru_maxrss / 1024,
                children_maxrss_mb=kids.ru_maxrss / 1024)
    out.write_text(json.dumps(data, default=str))
    return 0


# ---------------------------------------------------------------------------- parent


def run_child(mode: str, env: dict[str, str], out: Path, extra: list[str],
              server_pids: dict[str, int] | None,
              py_spy: str | None = None, py_spy_server: str | None = None) -> dict[str, Any]:
    """Run one flow/seed child; ``server_pids`` names the Prefect server's processes
    (``api``: the API and its uvicorn workers; ``services`` and ``redis`` in the scaled layout)
    whose CPU is counted over the child's run."""
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--out", str(out), *extra]
    busy0, t0 = machine_busy()
    server_pids = server_pids or {}
    server_pid = server_pids.get("api")
    server_cpu0 = {name: process_tree_cpu(pid) for name, pid in server_pids.items()}
    la0 = os.getloadavg()
    proc = subprocess.Popen(cmd, env=env, cwd=str(REPO))
    sampler = Sampler(proc.pid).start()
    spies = []
    if py_spy_server and server_pid:
        spies.append(subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server_pid),
             "--subprocesses", "--rate", "50", "--format", "raw", "--output", py_spy_server,
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if py_spy:
        # CPU samples of every thread of the flow process (collapsed stacks, flamegraph input)
        spies.append(subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid),
             "--rate", "50", "--format", "raw", "--output", py_spy, "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        code = proc.wait()
    except BaseException:  # interrupted: the child and its terminal workers go too
        from mt5_sync.shutdown import stop_process_tree

        for spy in spies:
            spy.kill()
        stop_process_tree(proc.pid)
        raise
    finally:
        sampler.stop()
    for spy in spies:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        spy.wait(60)
    busy1, t1 = machine_busy()
    if code != 0 or not out.exists():
        raise RuntimeError(f"{mode} child failed with exit code {code}")
    data: dict[str, Any] = json.loads(out.read_text())
    data["sampled"] = {
        "flow_peak_rss_mb": sampler.peak_main / 2**20,
        "workers_peak_rss_sum_mb": sampler.peak_children_sum / 2**20,
        "worker_peak_rss_mb": sampler.peak_child / 2**20,
        "workers_seen": len(sampler.children_seen),
        "rss_timeline": sampler.samples[:: max(1, len(sampler.samples) // 60)],
    }
    data["machine"] = {
        "busy_cores_avg": (busy1 - busy0) / max(1e-9, t1 - t0),
        "loadavg_before": la0,
        "loadavg_after": os.getloadavg(),
    }
    by_process = {name: process_tree_cpu(pid) - server_cpu0[name]
                  for name, pid in server_pids.items()}
    data["machine"]["prefect_server_cpu_s"] = sum(by_process.values()) if by_process else None
    data["machine"]["prefect_server_cpu_by_process_s"] = by_process
    return data


def analyse(args: argparse.Namespace, setup: dict[str, Any], ours: dict[str, Any],
            seed: dict[str, Any] | None, store: Any) -> dict[str, Any]:
    delays: dict[tuple[int, str], float] = setup["delays"]
    summary = ours["summary"]
    results = summary["syncResults"]
    n = len(results)
    done = [r for r in results if r["status"] not in ("deferred", "skipped")]
    deferred = [r for r in results if r["status"] == "deferred"]
    logins = {(a.login, a.server) for a in setup["world"].accounts}
    by_login = {k[0]: v for k, v in delays.items()}
    terminal_synced = sum(by_login[r["login"]] for r in done if r.get("login") in by_login)
    all_terminal = sum(delays[k] for k in logins)
    wall = ours["wall_s"]
    flow_wall = summary["duration_ms"] / 1000
    slots = args.slots
    ideal_synced = terminal_synced / slots
    timings = [r.get("timings") or {} for r in done]
    slot_ms = [t["slot_ms"] for t in timings if "slot_ms" in t]
    overhead = [t["prefect_ms"] for t in timings if "prefect_ms" in t]
    queue_wait = [t.get("terminal_wait_ms", 0.0) for t in timings]
    commit = [t.get("commit_ms", r.get("commit_ms", 0)) for t, r in zip(timings, done,
                                                                        strict=True)]
    term_ms = [r.get("terminal_ms", 0) for r in done]
    logs = store.fetch_all(
        "select started_at, completed_at, status from sync_logs where completed_at is not null"
        " and status <> 'deferred'")
    from mt5_sync.verify import max_overlap

    observed = max_overlap([(r["started_at"], r["completed_at"]) for r in logs]) if logs else 0
    out: dict[str, Any] = {
        "accounts": args.accounts,
        "slots": slots,
        "median_s": args.median,
        "sigma": args.sigma,
        "budget_s": args.budget,
        "status_counts": {s: sum(1 for r in results if r["status"] == s)
                          for s in ("success", "partial", "failed", "deferred")},
        "wall_s": round(wall, 2),
        "flow_wall_s": round(flow_wall, 2),
        "ideal_s": round(ideal_synced, 2),
        "ideal_all_s": round(all_terminal / slots, 2),
        "efficiency": round(ideal_synced / flow_wall, 3) if flow_wall else None,
        "efficiency_process": round(ideal_synced / wall, 3) if wall else None,
        "prefect_overhead_ms_mean": round(statistics.fmean(overhead), 1) if overhead else None,
        "prefect_overhead_ms_p50": round(pct(overhead, 0.5), 1) if overhead else None,
        "prefect_overhead_ms_p95": round(pct(overhead, 0.95), 1) if overhead else None,
        "slot_time_lost_ms_per_account": round(
            (flow_wall * slots - terminal_synced) / max(1, len(done)) * 1000, 1),
        "commit_ms_mean": round(statistics.fmean(commit), 1) if commit else None,
        "commit_ms_p95": round(pct(commit, 0.95), 1) if commit else None,
        "terminal_ms_mean": round(statistics.fmean(term_ms), 1) if term_ms else None,
        "slot_ms_mean": round(statistics.fmean(slot_ms), 1) if slot_ms else None,
        "terminal_wait_ms_mean": round(statistics.fmean(queue_wait), 1) if queue_wait else None,
        "max_in_flight_gauge": summary.get("maxInFlight"),
        "max_in_flight_sync_logs": observed,
        "terminals_busy_peak": summary.get("terminalsBusyPeak"),
        "terminals_busy_mean": summary.get("terminalsBusyMean"),
        "terminals_busy_fraction": round(summary["terminalsBusyMean"] / slots, 3)
        if summary.get("terminalsBusyMean") is not None else None,
        "flow_peak_rss_mb": round(max(ours["sampled"]["flow_peak_rss_mb"],
                                      ours["self_maxrss_mb"]), 1),
        "workers_peak_rss_sum_mb": round(ours["sampled"]["workers_peak_rss_sum_mb"], 1),
        "worker_peak_rss_mb": round(max(ours["sampled"]["worker_peak_rss_mb"],
                                        ours["children_maxrss_mb"]), 1),
        "flow_cpu_s": round(ours["self_cpu_s"], 1),
        "workers_cpu_s": round(ours["children_cpu_s"], 1),
        "prefect_server_cpu_s": round(ours["machine"]["prefect_server_cpu_s"] or 0, 1),
        "prefect_api_requests_per_account": round(
            sum(ours.get("http_requests", {}).values()) / max(1, len(done)), 2),
        "prefect_api_requests": ours.get("http_requests", {}),
        "machine_busy_cores_avg": round(ours["machine"]["busy_cores_avg"], 2),
        "loadavg_before": [round(x, 2) for x in ours["machine"]["loadavg_before"]],
        "deferred": len(deferred),
    }
    if deferred:
        out["deadline"] = {
            "budget_s": args.budget,
            "last_completion_s": round(max(
                (datetime.fromisoformat(r["completed_at"]) for r in done),
                default=datetime.fromisoformat(summary["syncResults"][0]["started_at"]),
            ).timestamp() - datetime.fromisoformat(
                min(r["started_at"] for r in done)).timestamp(), 1) if done else None,
            "synced": len(done),
            "deferred": len(deferred),
        }
    if seed is not None:
        seed_n = seed["accounts"]
        # Per-account non-terminal cost in the seed run (fetch IPC + db + transform + commit).
        extra = [r["slot_ms"] / 1000 - by_login[r["login"]] for r in seed["results"]]
        per_extra = statistics.fmean(extra) if extra else 0.0
        # The same accounts in the order both algorithms take them (least recently synced
        # first = id order on a fresh database): read from our own results.
        order = [by_login[r["login"]] for r in results if r.get("login") in by_login]
        model_full = seed_model(order, per_extra)
        model_measured_part = seed_model(order[:seed_n], per_extra)
        out["seed"] = {
            "measured_accounts": seed_n,
            "measured_wall_s": round(seed["wall_s"], 2),
            "model_wall_s_for_measured": round(model_measured_part, 2),
            "per_account_extra_s": round(per_extra, 3),
            "wall_s": round(seed["wall_s"] if seed_n == n else model_full, 2),
            "wall_is_model": seed_n != n,
            "flow_peak_rss_mb": round(max(seed["sampled"]["flow_peak_rss_mb"],
                                          seed["self_maxrss_mb"]), 1),
            "errors": seed["errors"],
        }
        out["ratio_ours_over_seed"] = round(flow_wall / out["seed"]["wall_s"], 3)
        if deferred:
            # Compare like with like: the seed's time for the accounts we synced.
            synced_order = [by_login[r["login"]] for r in done]
            out["seed"]["wall_s_for_synced"] = round(seed_model(synced_order, per_extra), 2)
            out["ratio_ours_over_seed"] = round(flow_wall / out["seed"]["wall_s_for_synced"], 3)
    return out


def parent(args: argparse.Namespace) -> int:
    from mt5_sync.localstack import short_root, start_local_stack
    from mt5_sync.store.migrations import apply_migrations
    from mt5_sync.store.postgres import PostgresStore

    t_start = time.monotonic()
    for item in args.server_env:  # e.g. PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED=false
        key, _, value = item.partition("=")
        os.environ[key] = value
    root = short_root("mt5b-")
    print(f"[bench] {args.accounts} accounts, {args.slots} slots, lognormal median "
          f"{args.median}s sigma {args.sigma}; root {root}", flush=True)
    stack = None
    try:
        stack = start_local_stack(root, prefect_api_workers=args.prefect_api_workers or None)
        apply_migrations(stack.app_database_url)
        setup = build_and_register(args, root, stack.app_database_url)
        seed_url = None
        if args.seed_run_max > 0:
            seed_url = stack.postgres.create_database("seedcopy", template="mt5sync", drop=True)
        print(f"[bench] stack up, accounts registered ({time.monotonic() - t_start:.1f}s)",
              flush=True)
        server_pids: dict[str, int] = {}
        if stack.prefect is not None:
            server_pids["api"] = stack.prefect.process.pid
            if stack.prefect.services_process is not None:
                server_pids["services"] = stack.prefect.services_process.pid
        if stack.redis is not None:
            server_pids["redis"] = stack.redis.process.pid
        previously_deferred: set[str] = set()
        for i in range(args.cycles):
            env = flow_env(stack, stack.app_database_url, setup["world_path"], setup["key"], args)
            out = root / f"ours-{i}.json"
            extra = ["--profile", args.profile] if args.profile and i == 0 else []
            print(f"[bench] cycle {i + 1}/{args.cycles}: running the flow ...", flush=True)
            ours = run_child("flow", env, out, extra, server_pids,
                             args.py_spy if i == 0 else None,
                             args.py_spy_server if i == 0 else None)
            seed = None
            if i == 0 and seed_url is not None:
                limit = min(args.accounts, args.seed_run_max)
                print(f"[bench] seed baseline on {limit} accounts ...", flush=True)
                senv = flow_env(stack, seed_url, setup["world_path"], setup["key"], args)
                seed = run_child("seed", senv, root / "seed.json", ["--limit", str(limit)],
                                 None)
            report = analyse(args, setup, ours, seed, PostgresStore(stack.app_database_url))
            report["cycle"] = i + 1
            results = ours["summary"]["syncResults"]
            if previously_deferred:
                started = [r["account_id"] for r in results if r["status"] != "deferred"]
                report["deferred_last_cycle"] = {
                    "count": len(previously_deferred),
                    "started_this_cycle": sum(a in previously_deferred for a in started),
                    "started_this_cycle_other": sum(a not in previously_deferred
                                                    for a in started),
                    "head_of_queue_was_deferred": all(
                        r["account_id"] in previously_deferred
                        for r in results[: min(len(previously_deferred), len(results))]),
                }
            previously_deferred = {r["account_id"] for r in results if r["status"] == "deferred"}
            report["command"] = "python scripts/bench_cycle.py " + " ".join(sys.argv[1:])
            started_accounts = max(1, len(results) - report["deferred"])
            report["per_account_cpu_s"] = {
                "flow": round(ours["self_cpu_s"] / started_accounts, 3),
                "prefect_server": round((ours["machine"]["prefect_server_cpu_s"] or 0)
                                        / started_accounts, 3),
                "prefect_server_by_process": {
                    name: round(cpu / started_accounts, 3)
                    for name, cpu in ours["machine"]["prefect_server_cpu_by_process_s"].items()},
            }
            report["prefect_server_layout"] = (
                f"scaled: {stack.prefect.api_workers} API workers + 1 services process + redis"
                if stack.prefect is not None and stack.prefect.scaled else "single process")
            print(json.dumps(report, indent=1, default=str), flush=True)
            if args.json:
                path = Path(args.json)
                if args.cycles > 1:
                    path = path.with_name(f"{path.stem}-cycle{i + 1}{path.suffix}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(report, indent=1, default=str))
            if args.keep_summary:
                shutil.copy(out, Path(args.keep_summary).with_suffix(f".{i + 1}.json"))
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"[bench] total {time.monotonic() - t_start:.1f}s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("flow", "seed"):
        p = argparse.ArgumentParser()
        p.add_argument("mode")
        p.add_argument("--out", required=True, type=Path)
        p.add_argument("--profile", default=None)
        p.add_argument("--limit", type=int, default=None)
        a = p.parse_args(argv)
        if a.mode == "flow":
            return child_flow(a.out, a.profile)
        return child_seed(a.out, a.limit)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--slots", type=int, default=10)
    p.add_argument("--queued", type=int, default=None,
                   help="MT5SYNC_QUEUED_ACCOUNTS: subflows in flight beyond the slots "
                        "(default: the product's, as many as the slots; 0 = one per slot)")
    p.add_argument("--median", type=float, default=1.5, help="median terminal time (s)")
    p.add_argument("--sigma", type=float, default=0.8, help="lognormal sigma")
    p.add_argument("--call-latency", type=float, default=0.0,
                   help="extra fixed latency per MT5 call (s)")
    p.add_argument("--history-days", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--budget", type=float, default=0,
                   help="cycle budget (s); 0 = no deadline (default, to measure the whole run)")
    p.add_argument("--cycles", type=int, default=1, help="consecutive cycles (deadline demo)")
    p.add_argument("--seed-run-max", type=int, default=1000,
                   help="run the seed's algorithm for real on at most this many accounts "
                        "(model the rest); 0 = skip the seed baseline")
    p.add_argument("--profile", default=None, help="pyinstrument HTML of the flow process")
    p.add_argument("--py-spy", default=None,
                   help="py-spy collapsed stacks of the flow process (all threads) to this file")
    p.add_argument("--py-spy-server", default=None,
                   help="py-spy collapsed stacks of the Prefect server during the flow run")
    p.add_argument("--prefect-api-workers", type=int, default=0, metavar="N",
                   help="scaled Prefect server: N API workers + a services process + Redis "
                        "(0: the single-process server)")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the Prefect server (server tuning experiments)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--keep-summary", default=None, help="copy the raw flow result here")
    from mt5_sync.shutdown import stop_on_signals

    with stop_on_signals():  # SIGTERM/SIGHUP: parent()'s finally runs, as on Ctrl+C
        return parent(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
