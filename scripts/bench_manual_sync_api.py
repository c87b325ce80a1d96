#!/usr/bin/env python3
"""Benchmark of the manual sync API's accept path (POST /api/mt5/account/{id}/sync).

What runs where (all on this machine, loopback only):

* an embedded PostgreSQL (the app database, migrated; N accounts of one user);
* the API in its own process: ``create_app`` under one uvicorn worker, with either a stub
  Prefect adapter (``--prefect stub``: measures auth + the database claim + the HTTP stack) or
  the real adapter against a real local Prefect server on the same PostgreSQL
  (``--prefect real``: adds a real ``create_flow_run`` with an idempotency key per request;
  no worker runs the flow runs, they stay Scheduled);
* the load generator in this process: ``--concurrency`` asyncio workers, one raw keep-alive
  HTTP/1.1 connection each; each request is for a different account (so each is a real
  202), then a second pass over the same accounts (all 429: the rate-limited path).

Prints p50/p90/p99/max latency and requests/s for both passes.

    .venv/bin/python scripts/bench_manual_sync_api.py --prefect stub --requests 2000
    .venv/bin/python scripts/bench_manual_sync_api.py --prefect real --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import jwt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt5_sync.localstack import (  # noqa: E402
    EmbeddedPostgres,
    PrefectServer,
    free_port,
    short_root,
)
from mt5_sync.shutdown import stop_on_signals  # noqa: E402

USER_ID = "00000000-0000-4000-8000-00000000be4c"
ISSUER = "http://127.0.0.1:54321/auth/v1"


class _StubPrefect:
    """Accepts every run at once: isolates the API's own cost from Prefect's."""

    async def start(self, run: object) -> str:
        return str(uuid.uuid4())

    async def aclose(self) -> None:
        pass


def serve(args: argparse.Namespace) -> None:
    """Child process: the API under uvicorn (config from the environment)."""
    import uvicorn

    from mt5_sync.api import create_app
    from mt5_sync.settings import Settings

    stub = _StubPrefect() if args.prefect == "stub" else None
    app = create_app(Settings(), prefect_api=stub)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def _seed(pg: EmbeddedPostgres, n: int) -> tuple[str, list[str]]:
    from mt5_sync.store.migrations import apply_migrations
    from mt5_sync.store.postgres import PostgresStore

    url = pg.create_database("bench", drop=True)
    apply_migrations(url)
    store = PostgresStore(url)
    store.ensure_user(USER_ID)
    rows = store.fetch_all(
        "insert into trading_accounts (user_id, login_number, broker_server,"
        " investor_password_encrypted) select %s::uuid, 5000000 + g, 'Bench-Server', 'x'"
        " from generate_series(1, %s) g returning id::text", (USER_ID, n))
    return url, [r["id"] for r in rows]


def _register_deployment(api_url: str) -> None:
    flow = httpx.post(f"{api_url}/flows/", json={"name": "sync-account"}).json()
    response = httpx.post(f"{api_url}/deployments/", json={
        "name": "manual-sync", "flow_id": flow["id"],
        "entrypoint": "flows/sync_account.py:sync_account", "enforce_parameter_schema": False,
    })
    response.raise_for_status()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                   path: str) -> int:
    """One keep-alive HTTP/1.1 POST with an empty JSON object; returns the status code."""
    writer.write(f"POST {path} HTTP/1.1\r\n".encode() + head)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _load(url: str, headers: dict[str, str], ids: list[str], concurrency: int
                ) -> tuple[list[float], Counter[int], float]:
    """``concurrency`` workers, one keep-alive connection each, raw HTTP/1.1 on asyncio
    streams: a load generator this thin leaves the CPU to the server (httpx's own overhead
    at 32 concurrent requests was larger than the API's on this 2-core machine)."""
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        **headers, "Host": f"{host}:{port}", "Content-Type": "application/json",
        "Content-Length": "2"}.items()).encode() + b"\r\n{}"
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    queue = iter(ids)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for account_id in queue:
                started = time.perf_counter()
                code = await _request(reader, writer, head, f"/api/mt5/account/{account_id}/sync")
                latencies.append(time.perf_counter() - started)
                codes[code] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, codes, time.perf_counter() - started


def _report(name: str, latencies: list[float], codes: Counter[int], elapsed: float) -> None:
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    print(f"{name:<18} n={len(ms):5d} codes={dict(codes)}  p50={q[49]:6.1f} ms  "
          f"p90={q[89]:6.1f} ms  p99={q[98]:6.1f} ms  max={ms[-1]:6.1f} ms  "
          f"{len(ms) / elapsed:7.1f} req/s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefect", choices=["stub", "real"], default="stub")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0

    with stop_on_signals():  # SIGTERM/SIGHUP: the finally below runs, as on Ctrl+C
        return _bench(args)


def _bench(args: argparse.Namespace) -> int:
    root = short_root("mt5b-")
    pg: EmbeddedPostgres | None = None
    prefect: PrefectServer | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        pg = EmbeddedPostgres.start(root / "pg")
        db_url, ids = _seed(pg, args.requests)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MT5SYNC_", "PREFECT_"))}
        api_key, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(40)
        env.update({"DATABASE_URL": db_url, "MT5SYNC_API_KEY": api_key,
                    "SUPABASE_JWT_SECRET": secret, "MT5SYNC_API_JWT_ISSUER": ISSUER,
                    "MT5SYNC_TERMINAL_BACKEND": "simulated",
                    "PREFECT_API_URL": "http://127.0.0.1:9/api"})
        if args.prefect == "real":
            pg.create_database("prefect", drop=True)
            print("starting a local Prefect server ...", flush=True)
            prefect = PrefectServer.start(pg.asyncpg_url("prefect"), root / "prefect")
            _register_deployment(prefect.api_url)
            env["PREFECT_API_URL"] = prefect.api_url
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--prefect", args.prefect, "--port", str(port)],
            env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("API did not start") from None
                time.sleep(0.2)
        now = int(time.time())
        token = jwt.encode({"sub": USER_ID, "aud": "authenticated", "iss": ISSUER,
                            "role": "authenticated", "iat": now, "exp": now + 3600},
                           secret, algorithm="HS256")
        headers = {"X-API-Key": api_key, "Authorization": f"Bearer {token}"}
        print(f"API: 1 uvicorn worker, Prefect: {args.prefect}, requests: {args.requests}, "
              f"concurrency: {args.concurrency}, cpus: {os.cpu_count()}", flush=True)
        asyncio.run(_load(url, headers, [str(uuid.uuid4()) for _ in range(50)], 8))  # warm-up
        first = asyncio.run(_load(url, headers, ids, args.concurrency))
        _report("accept (202)", *first)
        if first[2] < 50:  # the second pass must fall inside the 60 s window
            _report("rate-limited (429)", *asyncio.run(_load(url, headers, ids, args.concurrency)))
        else:
            print("rate-limited pass skipped: the first took longer than the window", flush=True)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if prefect is not None:
            prefect.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
