"""What one subflow costs Prefect itself: the floor under the cycle's per-account overhead.

Runs a parent flow that maps N *empty* async subflows (optionally each with K trivial task
runs and a fixed sleep standing in for terminal time), at most C in flight, against a real
Prefect server on PostgreSQL (the local stack, as ``scripts/bench_cycle.py`` uses), and prints
per subflow: the latency Prefect adds (subflow wall minus the sleep), CPU seconds of the flow
process and of the server, and the HTTP requests the client made. Nothing of this project runs
in the subflows, so these figures bound what any subflow-per-account design can reach on the
machine: e.g. with ~0.2 CPU-s of server time per subflow, a single-process server cannot
start more than ~5 subflows per second whatever the flow does.

    python scripts/bench_prefect_floor.py                       # the default grid
    python scripts/bench_prefect_floor.py --variant 0:10:100:1.0 --variant 2:10:100:1.0

A variant is ``tasks:in_flight:subflows:sleep_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mt5_sync.localstack import LocalStack

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_VARIANTS = ["0:1:30:0", "2:1:30:0", "0:10:100:1.0", "2:10:100:1.0"]


def _child(variant: str) -> dict[str, Any]:
    n_tasks, in_flight, n, sleep_s = (float(x) for x in variant.split(":"))
    import httpx

    requests: Counter[str] = Counter()
    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    real_send = httpx.AsyncClient.send

    async def send(self: Any, request: Any, *a: Any, **k: Any) -> Any:
        requests[f"{request.method} {ids.sub('{id}', request.url.path)}"] += 1
        return await real_send(self, request, *a, **k)

    httpx.AsyncClient.send = send  # type: ignore[method-assign]
    from prefect import flow, task

    @task(persist_result=False)
    async def step(i: int) -> int:
        return i

    @flow(persist_result=False)
    async def child(i: int) -> int:
        for k in range(int(n_tasks)):
            await step(k)
        await asyncio.sleep(sleep_s)
        return i

    @flow(persist_result=False)
    async def parent() -> tuple[float, list[float]]:
        gate = asyncio.Semaphore(int(in_flight))
        added: list[float] = []

        async def one(i: int) -> None:
            async with gate:
                t0 = time.perf_counter()
                await child(i)
                added.append(time.perf_counter() - t0 - sleep_s)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(int(n))))
        return time.perf_counter() - t0, sorted(added)

    wall, added = asyncio.run(parent())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": round(wall, 2),
        "added_ms_p50": round(added[len(added) // 2] * 1000),
        "added_ms_mean": round(sum(added) / len(added) * 1000),
        "flow_process_cpu_ms_per_subflow": round(
            (usage.ru_utime + usage.ru_stime) / n * 1000),
        "http_requests_per_subflow": round(sum(requests.values()) / n, 2),
        "http_requests": dict(requests.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variant", action="append", default=None,
                    help="tasks:in_flight:subflows:sleep_s (repeatable)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0

    from mt5_sync.localstack import local_stack
    from mt5_sync.shutdown import stop_on_signals

    # SIGTERM/SIGHUP: local_stack() stops the servers and removes its dir, as on Ctrl+C
    with stop_on_signals(), local_stack() as stack:
        return _measure(args, argv, stack)


def _measure(args: argparse.Namespace, argv: list[str] | None, stack: LocalStack) -> int:
    import psutil

    server = psutil.Process(stack.prefect.process.pid) if stack.prefect else None

    def server_cpu() -> float:
        if server is None:
            return 0.0
        total = 0.0
        for proc in [server, *server.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total

    env = dict(os.environ, **stack.prefect_env())
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    rows = []
    for variant in args.variant or DEFAULT_VARIANTS:
        before = server_cpu()
        done = subprocess.run(
            [sys.executable, __file__, "--child", variant],
            env=env, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        n = int(variant.split(":")[2])
        row = {"variant": variant,
               "server_cpu_ms_per_subflow": round((server_cpu() - before) / n * 1000),
               **row}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"rows": rows, "loadavg": os.getloadavg(), "cpus": os.cpu_count(),
              "command": "python scripts/bench_prefect_floor.py " + " ".join(argv or sys.argv[1:])}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
