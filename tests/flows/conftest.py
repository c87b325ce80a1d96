"""End-to-end harness: the real flows, a real Prefect server, real Postgres, simulated MT5.

Flows run in the test process (as ``mt5-sync sync`` does) against the session's Prefect
server; terminals are real worker processes running the project's MT5 adapter against the
simulated ``MetaTrader5`` module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mt5_sync.credentials import encrypt_password, generate_key
from mt5_sync.localstack import PrefectServer
from mt5_sync.mt5sim.world import World, build_world
from mt5_sync.settings import load_settings
from mt5_sync.store.postgres import PostgresStore
from mt5_sync.terminal.pool import close_all_pools

USER_ID = "00000000-0000-4000-8000-0000000000e2"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session", autouse=True)
def _prefect_api(prefect_server: PrefectServer, stack_root: Path) -> Iterator[None]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_LOGGING_LEVEL,
        temporary_settings,
    )

    with temporary_settings(
        updates={
            PREFECT_API_URL: prefect_server.api_url,
            PREFECT_LOCAL_STORAGE_PATH: str(stack_root / "results"),
            PREFECT_LOGGING_LEVEL: "WARNING",
        }
    ):
        yield


@dataclass
class SyncHarness:
    db_url: str
    world: World
    world_path: Path
    store: PostgresStore
    key: str
    account_ids: dict[int, str] = field(default_factory=dict)

    def register(self, *, active: bool = True) -> None:
        self.store.ensure_user(USER_ID, "e2e@example.com")
        for spec in self.world.accounts:
            self.account_ids[spec.login] = self.store.register_account(
                user_id=USER_ID,
                login_number=spec.login,
                broker_server=spec.server,
                broker_name=spec.company,
                investor_password_encrypted=encrypt_password(spec.password, self.key),
                server_time_rule=spec.time_rule,
                is_active=active,
            )

    def run_cycle(self, **params: Any) -> dict[str, Any]:
        from flows.sync_trading_data import sync_trading_data

        return asyncio.run(sync_trading_data(**params))

    def run_account(self, login: int, **params: Any) -> tuple[Any, dict[str, Any]]:
        from flows.sync_account import sync_account

        async def go() -> tuple[Any, dict[str, Any]]:
            state = await sync_account(
                account_id=self.account_ids[login], account_label=str(login),
                return_state=True, **params,
            )
            return state, await state.aresult(raise_on_failure=False)

        return asyncio.run(go())

    def advance(self, delta: timedelta) -> None:
        self.world = self.world.with_now(self.world.effective_now() + delta)
        self.world.save(self.world_path)

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return self.store.fetch_all(sql, params)


@pytest.fixture
def make_harness(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Build a world of N simulated accounts (with faults) and point the settings at it."""

    def make(
        n: int,
        *,
        faults: dict[int, list[dict[str, Any]]] | None = None,
        seed: int = 11,
        terminal_timeout_s: float = 20.0,
        fetch_retries: int = 2,
        active: bool = True,
        **world_kwargs: Any,
    ) -> SyncHarness:
        world = build_world(
            n,
            seed=seed,
            now_utc=NOW,
            timeline_start_utc=NOW - timedelta(days=20),
            faults=faults or {},
            state_dir=str(tmp_path / "sim-state"),
            **world_kwargs,
        )
        world_path = world.save(tmp_path / "world.json")
        key = generate_key()
        for name, value in {
            "DATABASE_URL": db_url,
            "MT5SYNC_CREDENTIALS_KEY": key,
            "MT5SIM_WORLD": str(world_path),
            "MT5SYNC_TERMINAL_BACKEND": "simulated",
            "MT5SYNC_TERMINAL_TIMEOUT_S": str(terminal_timeout_s),
            "MT5SYNC_FETCH_RETRIES": str(fetch_retries),
            "MT5SYNC_RETRY_BACKOFF_S": "0.2",
            "MT5SYNC_LEASE_WAIT_S": "5",
        }.items():
            monkeypatch.setenv(name, value)
        load_settings.cache_clear()
        harness = SyncHarness(db_url, world, world_path, PostgresStore(db_url), key)
        harness.register(active=active)
        return harness

    yield make
    close_all_pools()
    load_settings.cache_clear()
