"""50 concurrent requests for one account, spread over three app instances (each its own
uvicorn, event loop, thread pool and database connections -- like three replicas): the
database decides, so exactly one is accepted and the other 49 get 429."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.api.conftest import USER_A, Accounts, auth_headers
from tests.api.support import JwksServer, Keys, StubOrchestrator, api_settings, served

N_REQUESTS = 50
N_REPLICAS = 3


async def _burst(urls: list[str], path: str, headers: dict[str, str]) -> list[httpx.Response]:
    clients = [httpx.AsyncClient(base_url=u, timeout=60,
                                 limits=httpx.Limits(max_connections=N_REQUESTS)) for u in urls]
    start = asyncio.Event()

    async def one(i: int) -> httpx.Response:
        await start.wait()
        return await clients[i % len(clients)].post(path, headers=headers)

    tasks = [asyncio.create_task(one(i)) for i in range(N_REQUESTS)]
    await asyncio.sleep(0.05)
    start.set()
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for c in clients:
            await c.aclose()


def test_fifty_concurrent_requests_on_three_replicas_one_wins(
    db_url: str, jwks: JwksServer, keys: Keys, accounts: Accounts,
) -> None:
    stubs = [StubOrchestrator() for _ in range(N_REPLICAS)]
    settings = api_settings(db_url, jwks_url=jwks.url)
    with served(settings, stubs[0]) as a, served(settings, stubs[1]) as b, \
            served(settings, stubs[2]) as c:
        responses = asyncio.run(_burst(
            [a.url, b.url, c.url], f"/api/mt5/account/{accounts.a_active}/sync",
            auth_headers(keys.token(USER_A, alg="ES256"))))
    codes = Counter(r.status_code for r in responses)
    assert codes == {202: 1, 429: N_REQUESTS - 1}, codes
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in responses
               if r.status_code == 429)
    assert sum(len(s.runs) for s in stubs) == 1  # Prefect was asked exactly once
    rows = accounts.store.fetch_all("select status, trigger from sync_logs")
    assert rows == [{"status": "processing", "trigger": "manual"}]
    [winner] = [r for r in responses if r.status_code == 202]
    [run] = [run for s in stubs for run in s.runs]
    assert run.sync_id == winner.json()["sync_id"]
